#!/bin/sh
# tests/layers.sh - make check-layers: pool/ is layered, and a file may
# include only its own header and those of the modules before it:
#
#   util alloc rcu log config sock dns probe   leaves
#   conn      connection objects, their state machine, their fds
#   shard     idle lists
#   admit     slots, waiters, handoff
#   core      the pool object as the layers below the workers see it
#   endpoint  table, backoff, lifecycle, an endpoint's connections
#   worker    worker threads
#   lease stats pool    the public entry points
#
# Prints every include that goes up or sideways and fails if there is one.
set -u
order="util alloc rcu log config sock dns probe conn shard admit core addrset endpoint names worker lease stats pool"
rank() { i=0; for m in $order; do [ "$m" = "$1" ] && { echo $i; return; }; i=$((i + 1)); done; echo -1; }
bad=0
for f in pool/*.c pool/*.h; do
	mod=$(basename "$f"); mod=${mod%.*}
	me=$(rank "$mod")
	[ "$me" -ge 0 ] || { echo "$f: module $mod is not in the layer order"; bad=1; continue; }
	for inc in $(sed -n 's/^#include "\([a-z_-]*\)\.h".*/\1/p' "$f"); do
		[ "$inc" = cpool ] || [ "$inc" = "$mod" ] && continue
		r=$(rank "$inc")
		if [ "$r" -lt 0 ] || [ "$r" -ge "$me" ]; then
			echo "$f includes $inc.h: not below $mod"
			bad=1
		fi
	done
done
[ $bad = 0 ] && echo "layers: $(ls pool/*.[ch] | wc -l) files, every include goes down"
exit $bad
