#!/usr/bin/env bash
# mmdebstrap's customize hook: removes what a Python service never reads (the packages are configured
# by now, so their maintainer scripts no longer need it). $1: the new root filesystem.
set -euo pipefail
rootfs=${1:?}
stdlib=$(echo "$rootfs"/usr/lib/python3.*)
# glibc's iconv modules (Python has its own codecs), caches and logs of the build itself.
rm -rf "$rootfs"/usr/lib/*-linux-gnu/gconv "$rootfs"/var/cache/* "$rootfs"/var/log/*
# The standard library's own tests, 2to3, pydoc's topics and the IDLE/Tk parts.
rm -rf "$stdlib"/test "$stdlib"/lib2to3 "$stdlib"/pydoc_data "$stdlib"/idlelib "$stdlib"/tkinter
find "$stdlib" -depth -type d \( -name test -o -name tests -o -name idle_test \) -exec rm -rf {} +
# Debian's essential set brings usrmerge, and with it all of perl, for a conversion mmdebstrap has
# already done: usr-is-merged (included) satisfies the same dependency.
chroot "$rootfs" dpkg --purge usrmerge libfile-find-rule-perl libnumber-compare-perl libtext-glob-perl \
  perl libperl5.36 perl-modules-5.36 >/dev/null
