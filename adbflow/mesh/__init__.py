"""The mesh: phones orchestrating each other over Wi-Fi (issue 16).

wire: the message framing and authentication (the Python twin of device_scripts/mesh/
wire.sh, used by tests and by the laptop to talk to workers); control: `mesh up/down/
status/logs` over adb.
"""
