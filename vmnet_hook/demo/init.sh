#!/bin/sh
# The guest's /init (busybox sh, PID 1). Console: ttyS0 (a file on the host). Control
# channel: ttyS1 (a unix socket on the host, see vm.py): each request is one line
# "ID BASE64-COMMAND"; the answer is "@@BEGIN ID@@\n", the command's output (stdout and
# stderr), then "\n@@END ID STATUS@@\n". Every DHCP lease prints a LEASE line (lease.sh).
/bin/busybox --install -s
export PATH=/sbin:/bin:/usr/sbin:/usr/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp

say() { echo "vmnet-guest: $*" >/dev/console; }

say "init up $(cut -d' ' -f1 /proc/uptime)s"
while read -r module; do
	insmod "/lib/modules/$module.ko" || say "insmod $module failed"
done </etc/modules
hostname guest
ip link set lo up

for link in /sys/class/net/eth*; do
	[ -e "$link" ] || continue
	iface=${link##*/}
	ip link set "$iface" up
	say "$iface mac=$(cat "$link/address")"
	# -f: stay in this background job; retries forever, 2 s apart, until a lease.
	udhcpc -f -i "$iface" -s /lease.sh -O search -O mtu -t 3 -T 2 -A 2 -x hostname:guest \
		>/dev/console 2>&1 </dev/null &
done

control() {
	while IFS=' ' read -r id request; do
		[ -n "$request" ] || continue
		command=$(echo "$request" | base64 -d) || continue
		printf '@@BEGIN %s@@\n' "$id"
		sh -c "$command" </dev/null 2>&1
		printf '\n@@END %s %s@@\n' "$id" "$?"
	done </dev/ttyS1 >/dev/ttyS1
}

# raw: no echo, no CR/LF rewriting, no line length limit; clocal: a host that
# disconnects is no hangup.
stty -F /dev/ttyS1 raw -echo clocal
say "control ready $(cut -d' ' -f1 /proc/uptime)s"
while :; do
	control
	sleep 1
done
