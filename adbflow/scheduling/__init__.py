"""Who runs what: bids (a probe turned into numbers), the cost model and policies,
learned service times, device profiles and quarantine rules. Pure decisions; the only
I/O here is the bid round itself, which goes through `adbflow.device`."""
