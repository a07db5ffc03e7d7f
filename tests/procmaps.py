"""Reading this process's /proc/self/maps and smaps for a mapping."""


def mapping_perms(address: int) -> str:
    """The permission string ("r-xp", "r-xs", ...) of the mapping containing ``address``."""
    with open("/proc/self/maps") as f:
        for line in f:
            span, perms = line.split()[:2]
            lo, hi = (int(x, 16) for x in span.split("-"))
            if lo <= address < hi:
                return perms
    raise LookupError(f"{address:#x} is not mapped")


def smaps_field(address: int, field: str) -> int:
    """A kB field (e.g. "Private_Dirty") of the mapping starting at ``address``."""
    with open("/proc/self/smaps") as f:
        inside = False
        for line in f:
            head = line.split()
            if "-" in head[0] and len(head) >= 5 and ":" not in head[0]:
                lo = int(head[0].split("-")[0], 16)
                inside = lo == address
            elif inside and line.startswith(field + ":"):
                return int(head[1])
    raise LookupError(f"no {field} for a mapping at {address:#x}")


def smaps_total(start: int, end: int, field: str) -> int:
    """A kB field summed over every mapping inside [start, end): one image
    mapping is several once parts of it changed protection (a patch edit
    makes only the pages it writes writable, and the kernel may keep them a
    mapping of their own afterwards)."""
    total, inside, found = 0, False, False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and len(head) >= 5 and ":" not in head[0]:
                lo, hi = (int(x, 16) for x in head[0].split("-"))
                inside = start <= lo and hi <= end
                found |= inside
            elif inside and line.startswith(field + ":"):
                total += int(head[1])
    if not found:
        raise LookupError(f"no mapping inside [{start:#x}, {end:#x})")
    return total
