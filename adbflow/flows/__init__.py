"""Flows: declared sequences of stages (classify, story) with gates and placement rules.

adbflow/flows/model.py  the frozen dataclasses and their validation (pure)
adbflow/flows/load.py   TOML files (shipped in profiles/flows/, user flows by path)
adbflow/flows/gates.py  gate decisions and the drift monitor (pure; data, never code)
The scheduler's (device, model) choice is adbflow/scheduling/selector.py; running a flow
is adbflow/runtime/flow_engine.py.
"""
