"""Quoting of keys and values in the admin shell, and its output layout."""

from hypothesis import given, strategies as st
from twisted.trial import unittest

from geocachedb.admin import formatting as fmt
from geocachedb.admin.quoting import QuotingError, quote, split


class SplitTests(unittest.SynchronousTestCase):
    def test_words_are_separated_by_spaces_and_tabs(self):
        self.assertEqual(split(b"  put\tk   v "), [b"put", b"k", b"v"])
        self.assertEqual(split(b""), [])

    def test_double_quotes_group_words_and_take_escapes(self):
        self.assertEqual(split(b'put "a b" "x\\x00\\xFFy\\n\\t\\\\\\"\\0"'),
                         [b"put", b"a b", b"x\x00\xffy\n\t\\\"\x00"])

    def test_single_quotes_are_literal_but_for_quote_and_backslash(self):
        self.assertEqual(split(b"'a \\n b' 'it\\'s' '\\\\'"), [b"a \\n b", b"it's", b"\\"])

    def test_hex_words(self):
        self.assertEqual(split(b"x'00ff' X'' x'AbCd'"), [b"\x00\xff", b"", b"\xab\xcd"])
        # Not a whole word: an ordinary word that happens to start with x.
        self.assertEqual(split(b"x'00'y"), [b"x00y"])

    def test_adjacent_parts_form_one_word(self):
        self.assertEqual(split(b'a"b c"\'d\'e\\ f'), [b"ab cde f"])
        self.assertEqual(split(b'""'), [b""])

    def test_non_ascii_bytes_pass_through(self):
        self.assertEqual(split("clé \xff".encode("latin-1")), ["clé".encode("latin-1"), b"\xff"])

    def test_errors_say_what_to_type(self):
        cases = [
            (b'"open', "unterminated double quote: end the word with \""),
            (b"'open", "unterminated single quote"),
            (b"x'0'", "even number of hex digits"),
            (b"x'zz'", "bad hex literal x'zz'"),
            (b"a\\x4", "\\x needs two hex digits"),
            (b"a\\q", "unknown escape \\q: use \\xNN for a byte"),
            (b"a\\", "a line cannot end with a backslash"),
        ]
        for line, message in cases:
            with self.assertRaises(QuotingError) as e:
                split(line)
            self.assertIn(message, str(e.exception))


class QuoteTests(unittest.SynchronousTestCase):
    def test_plain_words_are_bare(self):
        self.assertEqual(quote(b"user:42"), "user:42")
        self.assertEqual(quote(b"a/b.c-d_e"), "a/b.c-d_e")

    def test_everything_else_is_quoted_and_escaped(self):
        self.assertEqual(quote(b""), '""')
        self.assertEqual(quote(b"a b"), '"a b"')
        self.assertEqual(quote(b"\x00\xff\n"), '"\\x00\\xff\\n"')
        self.assertEqual(quote("café".encode()), '"café"')
        self.assertEqual(quote(b"x'00'"), "\"x'00'\"")
        self.assertEqual(quote("\u200b".encode()), '"\\xe2\\x80\\x8b"')

    def test_limit_shows_the_size(self):
        self.assertEqual(quote(b"a" * 100, limit=5), '"aaaaa"...(100 bytes)')

    @given(st.binary(max_size=64))
    def test_split_reads_back_what_quote_prints(self, data):
        self.assertEqual(split(quote(data).encode("utf-8")), [data])


class FormattingTests(unittest.SynchronousTestCase):
    def test_table_aligns_columns_without_trailing_spaces(self):
        self.assertEqual(
            fmt.table(("A", "BB", "C"), [("xxx", "y", ""), ("z", "", "w")]),
            "A    BB  C\nxxx  y\nz        w",
        )

    def test_units(self):
        self.assertEqual(fmt.size(512), "512 B")
        self.assertEqual(fmt.size(1536), "1.5 KiB")
        self.assertEqual(fmt.size(5 * 1024 ** 4), "5.0 TiB")
        self.assertEqual(fmt.duration(0.0123), "12ms")
        self.assertEqual(fmt.duration(42), "42.0s")
        self.assertEqual(fmt.duration(3725), "1h 2m 5s")
        self.assertEqual(fmt.duration(2 * 86400 + 3600), "2d 1h 0m")
        self.assertEqual(fmt.ago(None), "never")
        self.assertEqual(fmt.number(None), "-")
