"""Plain-text layout for the admin shell: aligned tables and readable units.

Everything here returns ``str`` with ``\\n`` line ends; the session turns
them into CR LF for the wire.
"""


def table(headers, rows, indent=""):
    """Columns padded to their widest cell; the last column is not padded
    (no trailing spaces).  ``headers=None``: no header line."""
    cells = [[str(c) for c in row] for row in rows]
    if headers is not None:
        cells.insert(0, [str(h) for h in headers])
    if not cells:
        return ""
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    lines = []
    for row in cells:
        padded = [c.ljust(w) for c, w in zip(row[:-1], widths)] + [row[-1]]
        lines.append((indent + "  ".join(padded)).rstrip())
    return "\n".join(lines)


def fields(pairs, indent=""):
    """``label  value`` lines with the values aligned."""
    if not pairs:
        return ""
    width = max(len(label) for label, _ in pairs)
    return "\n".join(
        ("%s%s  %s" % (indent, label.ljust(width), value)).rstrip()
        for label, value in pairs
    )


def size(n):
    """Bytes as ``512 B``, ``12.4 MiB``..."""
    if n is None:
        return "-"
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return "%d B" % n if unit == "B" else "%.1f %s" % (n, unit)
        n /= 1024
    raise AssertionError("unreachable")


def duration(seconds):
    """``3d 2h 5m``, ``2h 3m 11s``, ``42.0s``, ``120ms``."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return "%dms" % round(seconds * 1000)
    if seconds < 60:
        return "%.1fs" % seconds
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return "%dd %dh %dm" % (days, hours, minutes)
    if hours:
        return "%dh %dm %ds" % (hours, minutes, s)
    return "%dm %ds" % (minutes, s)


def ago(seconds):
    """How long ago something happened; ``never`` for None."""
    return "never" if seconds is None else duration(seconds) + " ago"


def number(value):
    """Integers as they are, floats with sensible precision, None as ``-``."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return "%.2f" % value if abs(value) < 10 else "%.1f" % value
    return str(value)


def yes_no(flag):
    return "yes" if flag else "no"
