"""Every value a user types, as a type, and the one grammar each is parsed by.

    machine name  := [a-z] ( [a-z0-9-]{0,10} [a-z0-9] )?         1–12 characters
    image name    := [a-z] ( [a-z0-9-]{0,30} [a-z0-9] )?         1–32 characters
    count         := [0-9]{1,6}                                   ASCII digits only
    seconds       := count [ "s" | "m" | "h" | "d" ]
    size          := [0-9]{1,6} ( "." [0-9]{1,3} )? [KMGT]? ( "B" | "iB" )?   binary units
    cpu           := [0-9]{1,3} ( "." [0-9]{1,3} )?               CPUs' worth of time
    port          := [0-9]{1,5}                                   1–65535
    port spec     := port ":" port [ "/" ( "tcp" | "udp" ) ]
    address       := "auto" | "none" | ADDRESS "/" PREFIXLEN      (per family)
    bridge name   := [a-z] [a-z0-9-]{0,14}                        a Linux interface name
    user          := "local" | [UW] [A-Z0-9]{2,20} | "<@" id [ "|" label ] ">"   (Slack ids)
    login         := [a-z_] [a-z0-9_-]{0,30}                      a POSIX login in a machine
    from          := network { "," network }                     at most 16 (sshd from=)
    GitHub login  := [A-Za-z0-9] ( [A-Za-z0-9-]{0,37} [A-Za-z0-9] )?

Parsed once, where the text enters (a chat verb, a settings key); from there on only the
typed value travels, and what is stored (job arguments) is its canonical text. Twelve
characters keep every name derived from a machine name valid: host interface names are
at most 15 bytes (IFNAMSIZ - 1, linux/if.h) and nspawn derives ``vb-NAME`` and ``ve-NAME``.

One module per family of values; import a name from the module that defines it:

    text.py       showing a typed value back safely (``printable``), ASCII digits
    names.py      machines (``NAME``, ``OUTER/INNER``), images, bridges, nft tables,
                  Debian packages and suites, Docker containers, webhooks
    numbers.py    counts, durations, job ids, sizes, memory and CPU limits
    ports.py      ports, ``HOSTPORT:CTPORT[/PROTO]``, ``HOSTPORT[/PROTO]``
    addresses.py  address families, address requests, pools, IP addresses
    features.py   machine features and ``on``/``off``
    slack.py      users by immutable id (Slack ids, mentions, ``local``), channels
    access.py     SSH access: logins in a machine, ``--from`` networks, GitHub logins
    webhooks.py   delivery ids, secrets' environment variable names, ``QuotedWord``
"""
