"""`nbagent view`: recorded episodes and RL run folders in a local web page or one self-contained file.

`data` indexes what a path holds (trajectory files, a run folder's metrics and eval reports) and loads
episodes on demand by byte offset; `server` serves it on loopback as a JSON API and one static page;
`html` writes the same page as a single file. The page itself is `static/` (plain DOM, no build step).
"""
