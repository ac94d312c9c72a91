"""The host side of each instance's network, made as an orchestrator makes it
before a launch: a persistent TAP owned by the instance's uid (kiln, QEMU), or
a network namespace holding one end of a veth pair (runc, runsc). Every
instance has its own /30: the host end is .1, the service .2, so the harness
reaches each with a plain UDP socket in the host's namespace.

All changes go through iproute2 in batches (`ip -batch`), and everything this
module makes is named with a fixed prefix, so that `leftovers` can find what a
crashed or interrupted run left behind.
"""
import os
import re
import subprocess

# Per system: the link-name prefix and the second octet of its 10.x.0.0/16.
LINK_PREFIX = {"kiln": ("kdk", 201), "qemu-microvm": ("kdq", 202), "runc": ("kdr", 203), "runsc": ("kds", 204)}
NETNS_PREFIX = "kd-"
LINK_PATTERN = re.compile(r"^kd[kqrs][0-9]+$")


def link_name(system, index):
    return f"{LINK_PREFIX[system][0]}{index}"


def netns_name(system, index):
    return f"{NETNS_PREFIX}{system}-{index}"


def addresses(system, index):
    """(host address, service address) of instance `index`'s /30."""
    if not 0 <= index < 16384:
        raise ValueError(f"instance index {index} is outside 0-16383")
    octet = LINK_PREFIX[system][1]
    base = index * 4
    prefix = f"10.{octet}.{base >> 8}"
    return f"{prefix}.{(base & 255) + 1}", f"{prefix}.{(base & 255) + 2}"


def guest_mac(index):
    return f"02:6b:64:{index >> 16 & 255:02x}:{index >> 8 & 255:02x}:{index & 255:02x}"


def ip_batch(lines, netns=None, force=False):
    """Runs iproute2 commands in one process; raises with its error unless
    `force` (deletions: keep going past what is already gone)."""
    if not lines:
        return
    command = ["ip"] + (["-n", netns] if netns else []) + (["-force"] if force else []) + ["-batch", "-"]
    result = subprocess.run(command, input="\n".join(lines) + "\n", capture_output=True, text=True)
    if result.returncode != 0 and not force:
        raise RuntimeError(f"ip -batch failed: {result.stderr.strip()[:500]}")


def tune_link(name):
    """Per link, never host-wide: ARP retried every 10 ms rather than 1 s (a
    probe sent before the service is up would otherwise wait a second for
    the next try), only the latest probe kept while the address resolves
    (not the default 101, which a booting guest would then answer one by
    one), and no IPv6 chatter (router solicitations) at the guest."""
    for path, value in ((f"/proc/sys/net/ipv4/neigh/{name}/retrans_time_ms", "10"),
                        (f"/proc/sys/net/ipv4/neigh/{name}/unres_qlen", "1"),
                        (f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6", "1")):
        try:
            with open(path, "w") as handle:
                handle.write(value)
        except OSError:
            pass


def make_taps(system, indices, uid_of):
    names = [link_name(system, index) for index in indices]
    ip_batch([f"tuntap add dev {name} mode tap user {uid_of(index)}" for name, index in zip(names, indices)])
    for name in names:
        tune_link(name)
    lines = []
    for name, index in zip(names, indices):
        host, _ = addresses(system, index)
        # A short queue: what the host sends before the guest's driver is up
        # waits in the TAP, and the guest would answer every stale frame.
        lines += [f"addr add {host}/30 dev {name}", f"link set {name} txqueuelen 16 up"]
    ip_batch(lines)


def make_veths(system, indices, pool):
    """A namespace per instance with `eth0` (the service's address) paired
    with a host link (the host's address), as a CNI bridge-less plugin would."""
    lines = []
    for index in indices:
        lines += [f"netns add {netns_name(system, index)}",
                  f"link add {link_name(system, index)} type veth peer name eth0 netns {netns_name(system, index)}"]
    ip_batch(lines)
    for index in indices:
        tune_link(link_name(system, index))
    lines = []
    for index in indices:
        host, _ = addresses(system, index)
        lines += [f"addr add {host}/30 dev {link_name(system, index)}", f"link set {link_name(system, index)} up"]
    ip_batch(lines)

    def inside(index):
        _, service = addresses(system, index)
        ip_batch([f"addr add {service}/30 dev eth0", "link set eth0 up", "link set lo up"],
                 netns=netns_name(system, index))
    list(pool.map(inside, indices))


def remove(system, indices, namespaces):
    ip_batch([f"link del {link_name(system, index)}" for index in indices], force=True)
    if namespaces:
        ip_batch([f"netns del {netns_name(system, index)}" for index in indices], force=True)


def leftovers():
    """Links and namespaces with this module's names, whoever made them."""
    found = []
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    for line in links.splitlines():
        parts = line.split(":")
        if len(parts) > 1:
            name = parts[1].strip().split("@")[0]
            if LINK_PATTERN.match(name):
                found.append(("link", name))
    try:
        for name in os.listdir("/var/run/netns"):
            if name.startswith(NETNS_PREFIX):
                found.append(("netns", name))
    except FileNotFoundError:
        pass
    return found


def sweep(found):
    """Removes what `leftovers` found."""
    ip_batch([f"link del {name}" for kind, name in found if kind == "link"], force=True)
    ip_batch([f"netns del {name}" for kind, name in found if kind == "netns"], force=True)
