"""The running pipeline: configuration, typed events, the journal, picture detection,
dispatch with retries, stage bodies, the watch session, imaging and the story."""
