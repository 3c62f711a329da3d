"""The ipset command vocabulary the kernel package speaks: one ``IPSetOp`` is one line of
``ipset restore`` input (``create``/``flush``/``add``/``swap``/``destroy``), and ``parse_create``
reads a create line's options the way ipset(8) does. Pure: the engines build op lists
(kube-router's are in ``restore_text.ipset_ops``), ``ipset_netlink`` sends them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class IPSetOp:
    """One ipset command: ``verb`` plus its arguments, as a line of ``ipset restore`` input."""

    verb: str
    args: list[str]

    def line(self) -> str:
        """The op as ``ipset restore`` reads it."""
        return " ".join([self.verb, *self.args])


@dataclass
class CreateOptions:
    """What a ``create`` line asks for: set type, family (``inet``/``inet6``), sizes, timeout,
    extensions (``counters``, ``comment``, ``forceadd``, ``skbinfo``)."""

    stype: str
    family: str = "inet"
    hashsize: int | None = None
    maxelem: int | None = None
    timeout: int | None = None
    extensions: tuple[str, ...] = ()


_SIZES = ("hashsize", "maxelem", "timeout")
_EXTENSIONS = ("counters", "comment", "forceadd", "skbinfo")
_KERNEL_DEFAULTS = ("bucketsize", "initval")  # left to the kernel (ipset save prints them back)


def parse_create(args: list[str]) -> CreateOptions:
    """``<type> family inet hashsize N maxelem N timeout N [counters ...]`` (the arguments after
    the set name); ValueError names an option this vocabulary does not carry."""
    opts = CreateOptions(args[0])
    rest = args[1:]
    ext: list[str] = []
    i = 0
    while i < len(rest):
        key = rest[i]
        if key in _EXTENSIONS:
            ext.append(key)
            i += 1
            continue
        if i + 1 >= len(rest):
            raise ValueError(f"ipset create option {key!r} has no value")
        val = rest[i + 1]
        if key == "family":
            if val not in ("inet", "inet6"):
                raise ValueError(f"unsupported ipset family {val!r}")
            opts.family = val
        elif key in _SIZES:
            setattr(opts, key, int(val))
        elif key not in _KERNEL_DEFAULTS:
            raise ValueError(f"unsupported ipset create option {key!r}")
        i += 2
    opts.extensions = tuple(ext)
    return opts
