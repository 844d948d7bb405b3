"""One-line message text, shared by every layer: what a user is shown of an error is one line."""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["one_line"]


def one_line(message: object, limit: int = 600, noise: Iterable[str] = ()) -> str:
    r"""Condense a (possibly multi-line, nested) message or exception into one line.

    Nested reports (jsonargparse's trees, chained errors) put *where* on the first line and *what* on the
    most indented ones; this keeps the first line and the deepest lines, drops lines starting with one of
    ``noise``, collapses whitespace and cuts to ``limit`` characters.

    Args:
        message: the message, or an exception.
        limit: maximum length of the result.
        noise: prefixes of lines that describe the attempt rather than the problem.

    Example:
        >>> one_line('Parser key "trainer":\n  Problem with class:\n    Key "x" is not expected')
        'Parser key "trainer": Key "x" is not expected'
        >>> one_line("a\n   b"), one_line("x" * 20, limit=10)
        ('a: b', 'xxxxxxx...')
    """
    noise = tuple(noise)
    text = str(message).strip() or type(message).__name__
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    lines = [line for line in lines if not (noise and line.lstrip().startswith(noise))]
    if len(lines) > 1:
        depth = [len(line) - len(line.lstrip(" -")) for line in lines]
        deepest = max(depth[1:])
        causes = [lines[i].strip(" -") for i in range(1, len(lines)) if depth[i] == deepest]
        # Alternatives of a union that only say "it is not None" explain nothing.
        useful = [c for c in causes if "NoneType" not in c] or causes
        seen: list[str] = []
        for cause in useful:
            if cause not in seen:
                seen.append(cause)
        head = lines[0].rstrip(":")
        text = f"{head}: {'; '.join(seen)}" if seen else head
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."
