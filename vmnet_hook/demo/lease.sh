#!/bin/sh
# udhcpc's event script: $1 is the event, the lease is in the environment. Configures the
# NIC (address and its subnet route, MTU; the default route for the first NIC whose lease
# has a router) and prints one LEASE line per bound/renew event on the console.
# shellcheck disable=SC2154 # udhcpc sets interface, ip, mask, router, dns, ...
commas() { echo "$*" | tr -s ' ' ','; }

case "$1" in
deconfig)
	ip -4 addr flush dev "$interface"
	ip link set "$interface" up
	;;
bound | renew)
	[ "$1" = bound ] && ip -4 addr flush dev "$interface"
	ip addr replace "$ip/${mask:-32}" ${broadcast:+broadcast "$broadcast"} dev "$interface"
	[ -n "$mtu" ] && ip link set dev "$interface" mtu "$mtu"
	gateway=${router%% *}
	if [ -n "$gateway" ]; then
		# The first NIC to get here owns the default route (ln -s is atomic).
		ln -s "$interface" /run/default-route 2>/dev/null
		if [ "$(readlink /run/default-route)" = "$interface" ]; then
			ip route replace default via "$gateway" dev "$interface"
		fi
	fi
	if [ -n "$dns$search$domain" ]; then
		{
			[ -n "$search$domain" ] && echo "search ${search:-$domain}"
			for server in $dns; do echo "nameserver $server"; done
		} >/etc/resolv.conf
	fi
	line="LEASE iface=$interface ip=$ip mask=$mask router=$gateway dns=$(commas "$dns")"
	line="$line search=$(commas "$search") domain=$domain mtu=$mtu serverid=$serverid"
	line="$line lease=$lease event=$1"
	# the console may interleave other writers' output into a long line: the file is whole
	echo "$line" >"/run/lease.$interface"
	echo "$line" >/dev/console
	;;
leasefail | nak)
	echo "DHCP iface=$interface event=$1 message=$message" >/dev/console
	;;
esac
exit 0
