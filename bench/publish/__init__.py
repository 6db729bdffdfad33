"""Publishing: what people read — terminal text, Markdown, the leaderboard, the HTML viewer and
the dataset export. Agent- and model-produced text is escaped here, once per output kind."""
