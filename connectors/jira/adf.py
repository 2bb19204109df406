"""Atlassian Document Format (Jira Cloud's rich text) to plain text for the checks, and plain text to ADF for comments.

Checks read what a field says, not how it looks: marks (bold, links, colours) are dropped, blocks
end in a line break, list items keep a bullet or their number, table cells are joined with
`` | ``, and inline nodes that stand for something (a mention, an emoji, a date, a card link,
a status lozenge) keep their text. An unknown node contributes the text of its children.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

# nodes that end with a line break of their own
_BLOCKS = frozenset({"paragraph", "heading", "blockquote", "codeBlock", "panel", "rule", "mediaSingle", "mediaGroup",
                     "decisionList", "taskList", "expand", "nestedExpand", "layoutSection", "layoutColumn", "bodiedExtension"})


def is_adf(value: Any) -> bool:
    """Whether a field value is an ADF document."""
    return isinstance(value, Mapping) and value.get("type") == "doc" and isinstance(value.get("content"), list)


def adf_to_text(doc: Any) -> str:
    """The plain text of an ADF document (or of any ADF node); "" for None."""
    if doc is None:
        return ""
    out: list[str] = []
    _walk(doc, out, "")
    lines = [line.rstrip() for line in "".join(out).split("\n")]
    # at most one blank line between blocks, none at either end
    text: list[str] = []
    blank = False
    for line in lines:
        if not line:
            blank = bool(text)
            continue
        if blank:
            text.append("")
        text.append(line)
        blank = False
    return "\n".join(text)


def _walk(node: Any, out: list[str], indent: str) -> None:
    if isinstance(node, list):
        for child in node:
            _walk(child, out, indent)
        return
    if not isinstance(node, Mapping):
        return
    kind = node.get("type")
    attrs: Mapping[str, Any] = node["attrs"] if isinstance(node.get("attrs"), Mapping) else {}
    content: list[Any] = node["content"] if isinstance(node.get("content"), list) else []
    if kind == "text":
        out.append(str(node.get("text") or ""))
    elif kind == "hardBreak":
        out.append("\n" + indent)
    elif kind == "mention":
        out.append(str(attrs.get("text") or attrs.get("id") or ""))
    elif kind == "emoji":
        out.append(str(attrs.get("text") or attrs.get("shortName") or ""))
    elif kind == "status":
        out.append(str(attrs.get("text") or ""))
    elif kind in ("inlineCard", "blockCard", "embedCard"):
        out.append(str(attrs.get("url") or ""))
        if kind != "inlineCard":
            out.append("\n")
    elif kind == "date":
        out.append(_date(attrs.get("timestamp")))
    elif kind == "rule":
        out.append("\n---\n")
    elif kind in ("bulletList", "orderedList"):
        start: int = attrs["order"] if isinstance(attrs.get("order"), int) else 1
        for i, item in enumerate(content):
            bullet = f"{start + i}. " if kind == "orderedList" else "- "
            lines = adf_to_text(item.get("content") if isinstance(item, Mapping) else item).split("\n")
            out.append(f"\n{indent}{bullet}{lines[0]}")
            out.extend(f"\n{indent}{' ' * len(bullet)}{line}" if line else "\n" for line in lines[1:])
        out.append("\n")
    elif kind == "listItem":
        _walk(content, out, indent)
    elif kind == "table":
        for row in content:
            cells: list[Any] = row["content"] if isinstance(row, Mapping) and isinstance(row.get("content"), list) else []
            texts = [adf_to_text(cell).replace("\n", " ") for cell in cells]
            out.append("\n" + " | ".join(texts) + "\n")
    elif kind in ("media", "mediaInline"):
        name = attrs.get("alt") or attrs.get("name")
        if name:
            out.append(f"[attachment: {name}]")
    else:
        if kind in _BLOCKS:
            out.append("\n" + indent)
        _walk(content, out, indent)
        if kind in _BLOCKS:
            out.append("\n")


def _date(timestamp: Any) -> str:
    try:
        return datetime.fromtimestamp(int(str(timestamp)) / 1000, tz=timezone.utc).strftime("%Y-%m-%d")
    except (TypeError, ValueError, OverflowError, OSError):
        return ""


def text_to_adf(text: str) -> dict[str, Any]:
    """Plain text as an ADF document: a paragraph per block of lines, a hard break between lines of a block.

    Text in ADF is literal: brackets and asterisks are never read as markup, so a note and its
    ``[gapbridge:...]`` marker arrive exactly as written.
    """
    paragraphs: list[dict[str, Any]] = []
    for block in _blocks(text):
        inline: list[dict[str, Any]] = []
        for i, line in enumerate(block):
            if i:
                inline.append({"type": "hardBreak"})
            if line:
                inline.append({"type": "text", "text": line})
        paragraphs.append({"type": "paragraph", "content": inline})
    return {"type": "doc", "version": 1, "content": paragraphs}


def _blocks(text: str) -> list[list[str]]:
    blocks: list[list[str]] = [[]]
    for line in text.replace("\r\n", "\n").split("\n"):
        if line.strip():
            blocks[-1].append(line.rstrip())
        elif blocks[-1]:
            blocks.append([])
    return [b for b in blocks if b]
