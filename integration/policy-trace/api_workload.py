"""Drives kiln's API through everything a role may need: every
pre-boot resource (logger, metrics, machine config, boot source, drives,
network interface, entropy), large bodies, refused requests, InstanceStart,
pause, resume, FlushMetrics, a drive swapped after boot (PATCH /drives),
SendCtrlAltDel (the guest reboots on it and kiln exits).

usage: api_workload.py SOCKET CONSOLE SCRATCH KERNEL DRIVE_RO DRIVE_RW [TAP]
(CONSOLE: the file kiln's standard output goes to, read for the guest's
"waiting for ctrl-alt-del" before the key is sent.)
Exit 0 when every answer was the expected one; 1 with the first mismatch.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "api"))
from unix_http import Client, wait_for_socket  # noqa: E402


def main():
    socket_path, console, scratch, kernel, drive_ro, drive_rw = sys.argv[1:7]
    tap = sys.argv[7] if len(sys.argv) > 7 else None
    if not wait_for_socket(socket_path, 20):
        print("api_workload: no API socket at " + socket_path, file=sys.stderr)
        return 1
    client = Client(socket_path)
    failures = []

    def expect(status, method, path, body=None):
        got, answer = client.request(method, path, body)
        if got != status:
            failures.append("%s %s: %d, expected %d (%s)" % (method, path, got, status, json.dumps(answer)[:200]))
        return answer

    def expect_raw(status, method, path, text):
        client.connection.request(method, path, body=text.encode(), headers={"Content-Type": "application/json"})
        response = client.connection.getresponse()
        response.read()
        if response.status != status:
            failures.append("%s %s (%d bytes): %d, expected %d" % (method, path, len(text), response.status, status))

    expect(200, "GET", "/")
    expect(200, "GET", "/version")
    expect(200, "GET", "/machine-config")
    expect(204, "PUT", "/logger", {"log_path": scratch + "/api.log", "level": "Debug"})
    expect(204, "PUT", "/metrics", {"metrics_path": scratch + "/api.metrics"})
    # Large bodies under the limit, on the API thread and the event loop.
    expect(204, "PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": 128, "smt": False,
                                          "track_dirty_pages": False, "huge_pages": "None"})
    expect_raw(204, "PUT", "/machine-config",
               '{"vcpu_count": 1,' + " " * 40000 + '"mem_size_mib": 128}')
    big_args = "console=ttyS0 ctrlaltdel ticks " + " ".join("k%d=%s" % (i, "v" * 60) for i in range(200))
    expect(204, "PUT", "/boot-source", {"kernel_image_path": kernel, "boot_args": big_args[:2000]})
    expect_raw(413, "PUT", "/boot-source", "{" + " " * 60000 + "}")
    expect(204, "PUT", "/boot-source", {"kernel_image_path": kernel, "boot_args": "console=ttyS0 ctrlaltdel ticks"})
    # Refused requests: unknown route, bad JSON, a body over the limit.
    expect(400, "PUT", "/no-such-route", {})
    expect(400, "PUT", "/machine-config", {"vcpu_count": "many"})
    expect(400, "PATCH", "/vm", {"state": "Paused"})
    expect(204, "PUT", "/drives/ro", {"drive_id": "ro", "path_on_host": drive_ro, "is_root_device": False,
                                      "is_read_only": True})
    expect(204, "PUT", "/drives/rw", {"drive_id": "rw", "path_on_host": drive_rw, "is_root_device": False,
                                      "is_read_only": False, "cache_type": "Writeback"})
    expect(204, "PUT", "/entropy", {})
    if tap:
        expect(204, "PUT", "/network-interfaces/n0", {"iface_id": "n0", "host_dev_name": tap,
                                                      "guest_mac": "06:00:4b:49:4c:4e"})
    expect(200, "GET", "/vm/config")
    expect(204, "PUT", "/actions", {"action_type": "InstanceStart"})
    expect(200, "GET", "/")
    expect(204, "PATCH", "/vm", {"state": "Paused"})
    expect(204, "PUT", "/actions", {"action_type": "FlushMetrics"})
    expect(204, "PATCH", "/vm", {"state": "Resumed"})
    # Re-opened from another file (the old one closes), then refused.
    expect(204, "PATCH", "/drives/rw", {"drive_id": "rw", "path_on_host": drive_rw + ".2"})
    expect(400, "PATCH", "/drives/rw", {"drive_id": "rw", "path_on_host": scratch + "/no-such-drive"})
    expect(204, "PUT", "/actions", {"action_type": "FlushMetrics"})
    for _ in range(20):
        expect(200, "GET", "/machine-config")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with open(console, errors="replace") as output:
            if "guest: waiting for ctrl-alt-del" in output.read():
                break
        time.sleep(0.1)
    else:
        failures.append("the guest never waited for Ctrl-Alt-Del")
    expect(204, "PUT", "/actions", {"action_type": "SendCtrlAltDel"})
    for failure in failures:
        print("api_workload: " + failure, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
