"""``omni run``: drive a stage graph through its configured connectors in real processes."""
