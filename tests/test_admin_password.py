"""The admin password file: generated once with mode 0600, reused, or
read from --admin-password-file; never logged."""

import os
import stat

from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest

from geocachedb.admin.password import PasswordFileError, load_or_create_password


class PasswordFileTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.dir = self.mktemp()
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def assertNotLogged(self, password):
        for event in self.events:
            self.assertNotIn(password, repr(event))
            self.assertNotIn(password, formatEvent(event) or "")

    def test_first_start_generates_a_0600_file_in_the_data_dir(self):
        password, path = load_or_create_password(self.dir)
        self.assertEqual(path, os.path.join(self.dir, "admin.password"))
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertGreaterEqual(len(password), 24)
        with open(path) as f:
            self.assertEqual(f.read(), password + "\n")
        self.assertNotLogged(password)

    def test_mode_is_0600_whatever_the_umask(self):
        old = os.umask(0)
        try:
            _, path = load_or_create_password(self.dir)
        finally:
            os.umask(old)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)

    def test_restart_reuses_the_generated_password(self):
        first, path = load_or_create_password(self.dir)
        second, again = load_or_create_password(self.dir)
        self.assertEqual((first, path), (second, again))
        other, _ = load_or_create_password(self.mktemp())
        self.assertNotEqual(first, other)

    def test_empty_generated_file_is_an_error_not_a_new_secret(self):
        os.makedirs(self.dir)
        open(os.path.join(self.dir, "admin.password"), "w").close()
        with self.assertRaises(PasswordFileError) as e:
            load_or_create_password(self.dir)
        self.assertIn("is empty: delete it and restart", str(e.exception))

    def test_password_file_is_read_without_its_newline(self):
        os.makedirs(self.dir)
        path = os.path.join(self.dir, "pw")
        for content in (b"s3cret pass\n", b"s3cret pass\r\n", b"s3cret pass"):
            with open(path, "wb") as f:
                f.write(content)
            os.chmod(path, 0o600)
            self.assertEqual(load_or_create_password("/nonexistent", path), ("s3cret pass", path))
        self.assertFalse(os.path.exists(os.path.join(self.dir, "admin.password")))
        self.assertNotLogged("s3cret")

    def test_missing_or_empty_password_file_is_a_clear_error(self):
        os.makedirs(self.dir)
        path = os.path.join(self.dir, "pw")
        with self.assertRaises(PasswordFileError) as e:
            load_or_create_password(self.dir, path)
        self.assertIn("admin password file %s does not exist" % path, str(e.exception))
        open(path, "w").close()
        with self.assertRaises(PasswordFileError) as e:
            load_or_create_password(self.dir, path)
        self.assertIn("is empty: write the password on its first line", str(e.exception))

    def test_readable_by_others_is_warned_about_without_the_password(self):
        os.makedirs(self.dir)
        path = os.path.join(self.dir, "pw")
        with open(path, "w") as f:
            f.write("hunter2\n")
        os.chmod(path, 0o644)
        load_or_create_password(self.dir, path)
        text = "\n".join(formatEvent(e) for e in self.events)
        self.assertIn("accessible by other users (mode 0644): chmod 600 it", text)
        self.assertNotLogged("hunter2")
