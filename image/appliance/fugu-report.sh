#!/bin/sh
# Image only: prints the fugu units' states on the serial console once they settle, and
# the readiness line the image test waits for.
units="fugu-provision.service fugu-smtpd.service fugu-admin.service dovecot.service unbound.service"
all_active() {
    for u in $units; do
        systemctl is-active --quiet "$u" || return 1
    done
}
# Settled: active now and still active a few seconds later (not a restart loop); give up
# after about two minutes.
deadline=$(($(date +%s) + 120))
while [ "$(date +%s)" -lt "$deadline" ]; do
    if all_active && sleep 5 && all_active; then
        break
    fi
    sleep 1
done
for u in $units; do
    echo "fugu-report: $u $(systemctl is-active "$u")"
done
for u in fugu-smtpd.service fugu-admin.service fugu-provision.service; do
    echo "fugu-report: $u $(systemctl show -p User -p ProtectSystem -p NoNewPrivileges -p CapabilityBoundingSet --value "$u" | tr '\n' ' ')"
done
if ! systemctl is-active --quiet unbound.service; then
    journalctl -b --no-pager -o cat -u unbound | tail -n 12 | sed 's/^/fugu-report: unbound: /'
fi
if all_active; then
    echo "FUGU-READY"
else
    echo "FUGU-NOT-READY"
    journalctl -b --no-pager -o cat -u fugu-smtpd -u fugu-admin -u fugu-provision -u unbound | tail -n 60
fi
