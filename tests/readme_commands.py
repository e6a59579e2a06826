"""The commands the README shows, read off its code blocks (shared by the README test)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced block, in order."""
    blocks, lang, body = [], None, []
    for line in text.splitlines():
        if line.startswith("```"):
            if lang is None:
                lang, body = line[3:].strip(), []
            else:
                blocks.append((lang, "\n".join(body)))
                lang = None
        elif lang is not None:
            body.append(line)
    return blocks


def shown_commands(text: str) -> list[str]:
    """Every gwsim command of a shell or output block ('$ gwsim ...' or a bare 'gwsim ...'
    line), with its continuation lines joined; usage lines with placeholders are left out."""
    found = []
    for lang, body in code_blocks(text):
        if lang not in ("", "text", "bash", "console", "sh"):
            continue
        lines = body.splitlines()
        i = 0
        while i < len(lines):
            line = lines[i]
            command = line[2:] if line.startswith("$ ") else line
            if command.startswith(("gwsim ", "python -m gwsim")):
                while command.endswith("\\") and i + 1 < len(lines):
                    i += 1
                    command = command[:-1].rstrip() + " " + lines[i].strip()
                if not re.search(r"\b[A-Z]{3,}\b|\[-|\.\.\.", command.split("#")[0]):  # SCENARIO, [--flag], ...
                    found.append(command.split(" #")[0].strip())
            i += 1
    return found
