"""Checks README.md's Firecracker compatibility tables against the built binaries.

API rows: every operation of Firecracker's spec (integration/api/reference/
firecracker-api.yaml) must have a row. Each is sent to a fresh `kiln` (a
booted one for the operations the spec allows only after InstanceStart): the
spec's own request example where it has one, else the smallest body its
schema allows (required fields; the files its paths name are made). A row
that says "works" must get the status the spec gives; "refused" a 400 whose
fault_message says Kiln does not implement the feature; "not yet" the spec's
status for the request itself. A spec example for a field the row names as
refused must get a 400 naming that field.

Flag rows: every flag of Firecracker's `firecracker` and `jailer` (their
main.rs, and the jailer's older --node and --seccomp-level) must have a row,
and the binary must accept it ("works") or end at once naming the missing
feature ("refused").

usage: compat_table.py --kiln K --jailer J --guest G [--readme README.md] [--spec YAML]
Prints one line a check and "N passed, M failed"; exits 1 on any failure.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "integration" / "clients"))
import harness  # noqa: E402  (the network namespace and the waits)

# Firecracker's command-line flags (src/firecracker/src/main.rs) and its
# jailer's (src/jailer/src/main.rs), with the older jailer flags orchestrators still pass.
FIRECRACKER_FLAGS = [
    "--api-sock", "--id", "--seccomp-filter", "--no-seccomp", "--start-time-us", "--start-time-cpu-us",
    "--parent-cpu-time-us", "--config-file", "--metadata", "--no-api", "--log-path", "--level", "--module",
    "--show-level", "--show-log-origin", "--metrics-path", "--boot-timer", "--version", "--snapshot-version",
    "--describe-snapshot", "--http-api-max-payload-size", "--mmds-size-limit", "--enable-pci",
]
JAILER_FLAGS = [
    "--id", "--exec-file", "--uid", "--gid", "--chroot-base-dir", "--netns", "--daemonize", "--new-pid-ns",
    "--cgroup", "--resource-limit", "--cgroup-version", "--parent-cgroup", "--version", "--node", "--seccomp-level",
]
# Flags that take no value; every other one gets a sample value.
VALUELESS = {"--no-seccomp", "--no-api", "--show-level", "--show-log-origin", "--boot-timer", "--version",
             "--snapshot-version", "--enable-pci", "--daemonize", "--new-pid-ns"}
SAMPLE_VALUES = {"--level": "Info", "--http-api-max-payload-size": "4096", "--mmds-size-limit": "4096",
                 "--start-time-us": "1", "--start-time-cpu-us": "1", "--parent-cpu-time-us": "1",
                 "--uid": "1000", "--gid": "1000", "--cgroup-version": "2", "--node": "0", "--seccomp-level": "2",
                 "--cgroup": "pids.max=10", "--resource-limit": "no-file=64", "--id": "table-check"}
# Allowed by Firecracker only once the guest runs (its spec and api_server).
POST_BOOT = {("PATCH", "/vm"), ("PATCH", "/drives/{drive_id}"), ("PATCH", "/network-interfaces/{iface_id}")}
# Bodies the schema's minimum cannot make meaningful for this resource.
BODIES = {
    ("PUT", "/actions"): {"action_type": "InstanceStart"},
    ("PATCH", "/vm"): {"state": "Paused"},
    ("PATCH", "/machine-config"): {"vcpu_count": 1},
}
TAP = "tapcheck0"


def table(readme: str, name: str) -> list[list[str]]:
    """The rows of the table between <!-- compat:NAME --> and <!-- end compat:NAME -->."""
    match = re.search(rf"<!-- compat:{name} -->\n(.*?)<!-- end compat:{name} -->", readme, re.S)
    if not match:
        raise SystemExit(f"README.md has no compat:{name} table")
    rows = []
    for line in match.group(1).splitlines()[2:]:
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        rows.append([cell.strip("`") if index < len(cells) - 1 else cell for index, cell in enumerate(cells)])
    return rows


def verdict(text: str) -> str:
    return text.split(":")[0].strip()


class Spec:
    def __init__(self, path: Path):
        self.document = yaml.safe_load(path.read_text())

    def operations(self) -> list[tuple[str, str, dict]]:
        found = []
        for route, methods in self.document["paths"].items():
            for method, operation in methods.items():
                if method in ("get", "put", "patch", "delete"):
                    found.append((method.upper(), route, operation))
        return found

    def resolve(self, schema: dict) -> dict:
        while "$ref" in schema:
            schema = self.document["definitions"][schema["$ref"].rsplit("/", 1)[1]]
        return schema

    @staticmethod
    def success(operation: dict) -> int:
        return min(int(code) for code in operation["responses"] if str(code).startswith("2"))

    def body_schema(self, operation: dict):
        for parameter in operation.get("parameters", []):
            if parameter.get("in") == "body":
                return self.resolve(parameter["schema"])
        return None

    def minimal(self, schema: dict, files: "Files", name: str = "") -> object:
        schema = self.resolve(schema)
        if "enum" in schema:
            return schema["enum"][0]
        kind = schema.get("type", "object")
        if kind == "object":
            return {key: self.minimal(schema["properties"][key], files, key) for key in schema.get("required", [])}
        if kind == "array":
            return []
        if kind == "boolean":
            return False
        if kind == "integer":
            return max(1, schema.get("minimum", 1))
        return files.value_for(name)

    def examples(self, schema: dict) -> list[tuple[str, object]]:
        """(field, example) for each property of the schema with a spec example."""
        schema = self.resolve(schema)
        return [(key, value["example"]) for key, value in schema.get("properties", {}).items() if "example" in value]


class Files:
    """The files and names the bodies' string fields point at."""

    def __init__(self, folder: Path, guest: str):
        self.folder = folder
        self.guest = guest
        self.disk = harness.guest_disk(folder / "disk.img")

    def value_for(self, name: str) -> str:
        if name == "kernel_image_path":
            return self.guest
        if name in ("path_on_host", "initrd_path", "backend_path", "mem_file_path", "snapshot_path"):
            return str(self.disk)
        if name in ("log_path", "metrics_path"):
            path = self.folder / f"{name}.out"
            path.touch()
            return str(path)
        if name == "uds_path":
            return str(self.folder / "v.sock")
        if name == "host_dev_name":
            return TAP
        if name == "drive_id":
            return "rootfs"
        if name == "iface_id":
            return "eth0"
        return "x"


class Kiln:
    """One kiln with its API on a fresh socket, ended with SIGTERM."""

    def __init__(self, binary: str, folder: Path, tag: str):
        self.socket = str(folder / f"{tag}.sock")
        self.output = open(folder / f"{tag}.out", "w")
        self.process = subprocess.Popen([binary, "--api-sock", self.socket, "--id", "table-check"],
                                        stdout=self.output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        harness.wait_for("kiln's API socket", lambda: os.path.exists(self.socket) or self.process.poll() is not None, 10)

    def request(self, method: str, path: str, body=None) -> tuple[int, str]:
        connection = http.client.HTTPConnection("localhost", timeout=10)
        connection.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        connection.sock.settimeout(10)
        connection.sock.connect(self.socket)
        try:
            payload = None if body is None else json.dumps(body)
            connection.request(method, path, body=payload, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            return response.status, response.read().decode(errors="replace")
        finally:
            connection.close()

    def end(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.output.close()


class Checker:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, name: str, ok: bool, detail: str = ""):
        if ok:
            self.passed += 1
            print(f"ok    {name}")
        else:
            self.failed += 1
            print(f"FAIL  {name}: {detail}")


def concrete(route: str) -> str:
    return route.replace("{drive_id}", "rootfs").replace("{iface_id}", "eth0").replace("{id}", "pmem0")


def booted(kiln: Kiln, files: Files):
    """Configures a drive and an interface and starts the guest (kept running by its disk)."""
    for method, path, body in (
            ("PUT", "/boot-source", {"kernel_image_path": files.guest, "boot_args": "console=ttyS0"}),
            ("PUT", "/drives/rootfs", {"drive_id": "rootfs", "path_on_host": str(files.disk),
                                        "is_root_device": True, "is_read_only": False}),
            ("PUT", "/network-interfaces/eth0", {"iface_id": "eth0", "host_dev_name": TAP}),
            ("PUT", "/actions", {"action_type": "InstanceStart"})):
        status, answer = kiln.request(method, path, body)
        if status != 204:
            raise RuntimeError(f"booting for the post-boot checks: {method} {path} got {status} {answer}")


def check_api(readme: str, spec: Spec, options, checker: Checker, folder: Path):
    rows = {(row[0], row[1]): row[2] for row in table(readme, "api")}
    files = Files(folder, options.guest)
    subprocess.run(["ip", "tuntap", "add", "dev", TAP, "mode", "tap"], check=True)
    for index, (method, route, operation) in enumerate(spec.operations()):
        name = f"{method} {route}"
        row = rows.pop((method, route), None)
        if row is None:
            checker.check(name, False, "the spec has it; README's table has no row")
            continue
        schema = spec.body_schema(operation)
        body = BODIES.get((method, route))
        if body is None and schema is not None:
            body = spec.minimal(schema, files)
            # A drive needs a backing file or a vhost-user socket (either is
            # optional in the schema): the file, as clients send.
            if "path_on_host" in schema.get("properties", {}):
                body["path_on_host"] = files.value_for("path_on_host")
        if isinstance(body, dict):
            if "drive_id" in body:
                body["drive_id"] = "rootfs"
            if "iface_id" in body:
                body["iface_id"] = "eth0"
        kiln = Kiln(options.kiln, folder, f"op{index}")
        try:
            if (method, route) in POST_BOOT:
                booted(kiln, files)
            elif (method, route) == ("PUT", "/actions"):
                kiln.request("PUT", "/boot-source", {"kernel_image_path": files.guest, "boot_args": "console=ttyS0"})
                kiln.request("PUT", "/drives/rootfs", {"drive_id": "rootfs", "path_on_host": str(files.disk),
                                                        "is_root_device": True, "is_read_only": False})
            status, answer = kiln.request(method, concrete(route), body)
            wanted = Spec.success(operation)
            kind = verdict(row)
            if kind in ("works", "not yet"):
                checker.check(f"{name} ({kind}) {json.dumps(body)}", status == wanted,
                              f"the spec gives {wanted}, kiln answered {status} {answer}")
            elif kind == "refused":
                checker.check(f"{name} (refused)", status == 400 and "Kiln does not implement" in answer,
                              f"wanted a 400 naming the feature, kiln answered {status} {answer}")
            else:
                checker.check(name, False, f"unknown verdict {row!r}")
            # A row saying `field` is "value" is checked in the answer too.
            for field, value in re.findall(r'`([a-z_]+)` is "([^"]*)"', row):
                shown = json.loads(answer).get(field) if status == wanted else None
                checker.check(f"{name}: {field} is {value!r}", shown == value, f"kiln answered {status} {answer}")
            refused_fields = re.findall(r"`([a-z_]+)`", row.split("refused", 1)[0]) if "refused" in row and kind == "works" else []
            for field, example in (spec.examples(schema) if schema else []):
                example_body = dict(body or {}, **{field: example})
                status, answer = kiln.request(method, concrete(route), example_body)
                if field in refused_fields:
                    checker.check(f"{name} with the spec's example {field}={example!r} (refused by name)",
                                  status == 400 and field in answer, f"kiln answered {status} {answer}")
                else:
                    checker.check(f"{name} with the spec's example {field}={example!r}", status == wanted,
                                  f"the spec gives {wanted}, kiln answered {status} {answer}")
        finally:
            kiln.end()
    for (method, route) in rows:
        checker.check(f"{method} {route}", False, "README's table has it; the spec does not")


def run_flag(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)


def check_flags(readme: str, options, checker: Checker, folder: Path):
    for table_name, binary, reference, unknown in (
            ("kiln", options.kiln, FIRECRACKER_FLAGS, "unknown argument"),
            ("jailer", options.jailer, JAILER_FLAGS, "unknown flag")):
        rows = {row[0]: row[1] for row in table(readme, table_name)}
        for flag in reference:
            row = rows.pop(flag, None)
            if row is None:
                checker.check(f"{table_name} {flag}", False, "Firecracker has it; README's table has no row")
                continue
            argv = [binary, flag] + ([] if flag in VALUELESS else [SAMPLE_VALUES.get(flag, str(folder / "absent"))])
            if table_name == "kiln" and flag not in ("--no-api", "--api-sock", "--version"):
                argv.append("--no-api")  # never serve: without a kernel or config file kiln stops after parsing
            if table_name == "kiln" and flag == "--api-sock":
                argv.append("--no-api")
            result = run_flag(argv)
            said = result.stdout + result.stderr
            kind = verdict(row)
            if kind == "works":
                checker.check(f"{table_name} {flag} (works)", unknown not in said and "does not implement" not in said,
                              f"{' '.join(argv)} said: {said.strip()[:300]}")
            elif kind == "refused":
                checker.check(f"{table_name} {flag} (refused)", result.returncode != 0 and "does not implement" in said,
                              f"{' '.join(argv)} exited {result.returncode}: {said.strip()[:300]}")
            else:
                checker.check(f"{table_name} {flag}", False, f"unknown verdict {row!r}")
        for flag in rows:
            checker.check(f"{table_name} {flag}", False, "README's table has it; Firecracker's list does not")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kiln", required=True)
    parser.add_argument("--jailer", required=True)
    parser.add_argument("--guest", required=True)
    parser.add_argument("--readme", default=str(ROOT / "README.md"))
    parser.add_argument("--spec", default=str(ROOT / "integration/api/reference/firecracker-api.yaml"))
    options = parser.parse_args()
    for name in ("kiln", "jailer", "guest", "readme", "spec"):
        setattr(options, name, os.path.abspath(getattr(options, name)))
    # The post-boot rows boot the test guest, and the interface rows need a TAP in a namespace of their own.
    if os.geteuid() != 0 or not os.access("/dev/kvm", os.R_OK | os.W_OK):
        print("compat-table: skipped: the checks boot the test guest and make a TAP, which needs root and /dev/kvm")
        return 0
    harness.isolated_network()
    readme = Path(options.readme).read_text()
    checker = Checker()
    with tempfile.TemporaryDirectory(prefix="kiln-compat-") as scratch:
        check_api(readme, Spec(Path(options.spec)), options, checker, Path(scratch))
        check_flags(readme, options, checker, Path(scratch))
    print(f"compat-table: {checker.passed} passed, {checker.failed} failed")
    return 1 if checker.failed else 0


if __name__ == "__main__":
    sys.exit(main())
