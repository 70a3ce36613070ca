"""``nbagent view PATH --html OUT.html``: the page as one file, with its data inside (no server, no network).

Every row of the table is embedded; whole episodes only up to a cap (the first ones, in file order), and
the page says how many. The JSON goes in a ``<script type="application/json">`` element with ``<``, ``>``
and ``&`` written as ``\\u`` escapes, so no recorded text can close that element.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nbagent.view.data import Collection
from nbagent.view.server import static_text

DEFAULT_MAX_EPISODES = 500


def embed_json(value: Any) -> str:
    """`value` as JSON that is safe inside a ``<script>`` element."""
    text = json.dumps(value, ensure_ascii=False)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def render_html(collection: Collection, max_episodes: int = DEFAULT_MAX_EPISODES) -> str:
    """The self-contained page of `collection`, with at most `max_episodes` whole episodes."""
    count = min(max_episodes, len(collection.rows))
    data = {
        "summary": {**collection.summary(), "embedded": count},
        "rows": collection.rows,
        "episodes": {str(i): collection.episode(i) for i in range(count)},
    }
    page = static_text("index.html")
    page = page.replace(
        '<link rel="stylesheet" href="static/view.css">', f"<style>\n{static_text('view.css')}</style>"
    )
    script = static_text("view.js").replace("</", "<\\/")
    return page.replace(
        '<script src="static/view.js"></script>',
        f'<script id="nbview-data" type="application/json">{embed_json(data)}</script>\n'
        f"<script>\n{script}</script>",
    )


def write_html(collection: Collection, out: Path, max_episodes: int = DEFAULT_MAX_EPISODES) -> int:
    """Write the page to `out`; return how many whole episodes it embeds."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html(collection, max_episodes), encoding="utf-8")
    return min(max_episodes, len(collection.rows))
