"""What a change causes beyond its rows (events, webhooks, a run back from stale), the
exports and the report: between the routes and the store."""
