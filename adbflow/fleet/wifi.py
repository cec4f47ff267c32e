"""The virtual device's "Wi-Fi": a loopback address of its own, shown as wlan0.

Why loopback: the devices share the host's network namespace (a namespace per device would
need veth pairs and root-only plumbing); every 127.0.0.0/8 address is local on Linux, so a
listener bound to the device's own address is reachable from the other devices and from
the host, and traffic never leaves the machine. The address is derived from the device's
adb port (127.1.PORT_HI.PORT_LO): unique among all fleets running on the machine at once
(fleets of other test sessions use other ports), stable across device restarts.

Inside the device, `ip` (Android ships iproute2's) and `ifconfig wlan0` print that address
on wlan0 in their real formats, so adbflow finds it the way it does on a phone.
Limit: nothing stops a device program from binding other loopback addresses (as a real
phone could not); the mesh binds only the address it was given.
"""
from __future__ import annotations

from pathlib import Path


def wifi_address(adb_port: int) -> str:
    """The device's Wi-Fi address from its adb port."""
    if not 0 < adb_port < 65536:
        raise ValueError(f"adb port {adb_port} out of range")
    return f"127.1.{adb_port >> 8}.{adb_port & 255}"


def port_of(serial: str) -> int | None:
    tail = serial.rpartition(":")[2] if ":" in serial else serial.rpartition("-")[2]
    return int(tail) if tail.isdigit() else None


def ip_script(addr: str) -> str:
    """/system/bin/ip: `ip [-o] [-4] addr [show [dev] IFACE]` in iproute2's format."""
    return f"""#!/system/bin/sh
# adbflow virtual device: iproute2's `ip addr` output; wlan0 is this device's loopback
# "Wi-Fi" address (adbflow/fleet/wifi.py). Other subcommands are not emulated.
one=; want=
for a in "$@"; do case $a in -o|-oneline) one=1;; addr|address|a|show|dev|-4|-f|inet) ;;
  lo|wlan0) want=$a;; *) echo "ip: only 'ip [-o] [-4] addr [show] [lo|wlan0]' is emulated" >&2; exit 1;; esac; done
if [ -n "$one" ]; then
  [ "$want" = wlan0 ] || echo "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever"
  [ "$want" = lo ] || echo "30: wlan0    inet {addr}/24 brd {addr.rsplit('.', 1)[0]}.255 scope global wlan0\\       valid_lft forever preferred_lft forever"
  exit 0
fi
if [ "$want" != wlan0 ]; then
echo "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN group default qlen 1000"
echo "    inet 127.0.0.1/8 scope host lo"
fi
if [ "$want" != lo ]; then
echo "30: wlan0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc mq state UP group default qlen 3000"
echo "    inet {addr}/24 brd {addr.rsplit('.', 1)[0]}.255 scope global wlan0"
fi
"""


def ifconfig_script(addr: str) -> str:
    """/system/bin/ifconfig for `ifconfig wlan0` (toybox's format); other uses go to toybox."""
    return f"""#!/system/bin/sh
# adbflow virtual device: toybox ifconfig output for wlan0 (the loopback "Wi-Fi" address);
# anything else is toybox's own ifconfig (the host's interfaces: shared network namespace).
if [ "$#" = 1 ] && [ "$1" = wlan0 ]; then
  echo "wlan0     Link encap:Ethernet  HWaddr 02:00:00:00:00:00"
  echo "          inet addr:{addr}  Bcast:{addr.rsplit('.', 1)[0]}.255  Mask:255.255.255.0"
  echo "          UP BROADCAST RUNNING MULTICAST  MTU:1500  Metric:1"
  exit 0
fi
exec toybox ifconfig "$@"
"""


# Cutting a device off the "Wi-Fi", separately from adb (`FleetClient.wifi(serial, False)`):
# the fleet host creates STATE_DIR/net/ADDR; that directory is bound read-only into every
# device at NET_DIR. The device's `nc` (what the mesh and any shell script use for TCP) is a
# wrapper that refuses, like a phone without Wi-Fi, when its own address is cut (no listen,
# no connect) or when the address it connects to is cut. Limits (no iptables, no network
# namespace per device): the kernel still accepts TCP to a cut address, so host processes
# (tests acting as a laptop on the Wi-Fi) still reach it, connections already open stay open,
# a listener started before the cut keeps accepting (its peers' `nc` refuse to connect), and
# toybox applets that run nc themselves (`timeout 5 nc ...`: toybox runs its own applets
# without a PATH lookup) bypass the wrapper.
NET_DIR = "/vendor/adbflow/net"


def net_dir(state_dir: Path | str) -> Path:
    """Host directory of the cut flags (one per fleet, bound into every device)."""
    return Path(state_dir) / "net"


def set_wifi(state_dir: Path | str, addr: str, on: bool) -> bool:
    """Cut (on=False) or restore the device with Wi-Fi address `addr`; returns `on`."""
    d = net_dir(state_dir)
    d.mkdir(parents=True, exist_ok=True)
    flag = d / addr
    if on:
        flag.unlink(missing_ok=True)
    else:
        flag.write_text("cut\n")
    return on


def nc_wrapper(addr: str) -> str:
    """/system/bin/nc (and netcat): toybox nc behind the fleet's Wi-Fi switch."""
    return f"""#!/system/bin/sh
# adbflow virtual device: toybox nc, refused while this device is cut off the "Wi-Fi"
# (adbflow/fleet/wifi.py: flag files in {NET_DIR}, written by the fleet host only).
if [ -e {NET_DIR}/{addr} ]; then echo "nc: Network is unreachable" >&2; exit 1; fi
for _a; do case $_a in 127.*) if [ -e "{NET_DIR}/$_a" ]; then
  echo "nc: connect: Network is unreachable" >&2; exit 1; fi;; esac; done
exec toybox nc "$@"
"""
