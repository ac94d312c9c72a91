"""The host side of the lane-1 guest's network test on a TAP, over an
AF_PACKET socket: wait for the guest's hello (UDP 7777), send it a datagram
to its echo port (7), wait for the echo. Every wait has a deadline.

usage: tap_echo.py TAP SECONDS [READY_FILE]   (exit 0: echoed; 1: no hello or no echo)
READY_FILE is created once the socket is bound: the guest says hello once,
so its caller starts the guest only then.
"""
import socket
import struct
import sys
import time

GUEST_MAC = bytes([0x06, 0x00, 0x4B, 0x49, 0x4C, 0x4E])
HOST_MAC = bytes([0x06, 0x00, 0x4B, 0x49, 0x4C, 0x01])
HOST_IP, GUEST_IP = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])


def checksum(header):
    total = sum(struct.unpack("!%dH" % (len(header) // 2), header))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def udp_frame(payload, source_port, destination_port):
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28 + len(payload), 1, 0, 64, 17, 0, HOST_IP, GUEST_IP))
    ip[10:12] = struct.pack("!H", checksum(bytes(ip)))
    udp = struct.pack("!HHHH", source_port, destination_port, 8 + len(payload), 0)
    return GUEST_MAC + HOST_MAC + b"\x08\x00" + bytes(ip) + udp + payload


def udp_ports(frame):
    if len(frame) < 42 or frame[12:14] != b"\x08\x00" or frame[23] != 17:
        return None
    start = 14 + (frame[14] & 0xF) * 4
    return struct.unpack("!HH", frame[start:start + 4]), frame[start + 8:]


def wait_for(sock, deadline, accept):
    while time.monotonic() < deadline:
        try:
            frame = sock.recv(2048)
        except socket.timeout:
            continue
        parsed = udp_ports(frame)
        if parsed and accept(*parsed):
            return parsed
    return None


def main():
    tap, seconds = sys.argv[1], float(sys.argv[2])
    deadline = time.monotonic() + seconds
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
    sock.bind((tap, 0))
    sock.settimeout(0.2)
    if len(sys.argv) > 3:
        open(sys.argv[3], "w").close()
    if not wait_for(sock, deadline, lambda ports, _: ports[1] == 7777):
        print("tap_echo: no hello from the guest", file=sys.stderr)
        return 1
    payload = b"policy-trace echo " + b"x" * 900
    sock.send(udp_frame(payload, 40007, 7))
    if not wait_for(sock, deadline, lambda ports, body: ports[1] == 40007 and body == payload):
        print("tap_echo: no echo from the guest", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
