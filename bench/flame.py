"""
Collapsed stacks (py-spy's ``raw`` format: one ``frame;frame;... count``
line per stack) into a flame graph SVG and a short text summary.

py-spy writes either an SVG or collapsed stacks per recording; the
benches record collapsed stacks (small, easy to sum and to diff) and
draw the SVG from them here, so each profiled row gets both without
sampling the server twice.

    .venv/bin/python bench/flame.py stacks.txt             # summary on stdout
    .venv/bin/python bench/flame.py stacks.txt --svg out.svg
"""

from __future__ import annotations

import argparse
import html
import re
from collections import Counter

#: py-spy appends the file and line to each frame: "send (kezchat/relay/relay.py:170)"
_LOCATION = re.compile(r" \((.*?)(?::\d+)?\)$")


def read_stacks(path: str) -> Counter[tuple[str, ...]]:
    stacks: Counter[tuple[str, ...]] = Counter()
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            stack, _, count = line.rpartition(" ")
            try:
                n = int(count)
            except ValueError:
                continue
            stacks[tuple(stack.split(";"))] += n
    return stacks


def short(frame: str) -> str:
    """
    A frame without its line number, and with only the tail of its path.
    """
    match = _LOCATION.search(frame)
    if not match:
        return frame
    path = match.group(1)
    for marker in ("site-packages/", "/kezchat/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker == "/kezchat/":
                path = "kezchat/" + path
            break
    return f"{frame[:match.start()]} ({path})"


def summary(stacks: Counter[tuple[str, ...]], top: int = 15) -> list[str]:
    """
    The busiest frames by their own samples (self) and by every sample
    they are on the stack of (total), as shares of all samples.
    """
    total = sum(stacks.values()) or 1
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for stack, n in stacks.items():
        if stack:
            own[short(stack[-1])] += n
        for frame in {short(f) for f in stack}:
            inclusive[frame] += n
    lines = [f"{total} samples"]
    lines.append("self:")
    lines += [f"  {n / total:6.1%}  {frame}" for frame, n in own.most_common(top)]
    lines.append("total (on the stack):")
    lines += [f"  {n / total:6.1%}  {frame}" for frame, n in inclusive.most_common(top)]
    return lines


def folded(stacks: Counter[tuple[str, ...]]) -> str:
    """
    The stacks again as collapsed lines, frames shortened (no line numbers,
    short paths) and merged: a few KiB, small enough to keep in git.
    """
    merged: Counter[str] = Counter()
    for stack, n in stacks.items():
        frames = [short(f) for f in stack]
        # the same few frames start every stack (twistd's start-up, the
        # reactor's loop): keep the stack from the reactor's poll down
        for i, frame in enumerate(frames):
            if frame.startswith(("mainLoop ", "ReactorBase.mainLoop ")):
                frames = frames[i + 1:]
                break
        merged[";".join(frames)] += n
    total = sum(merged.values())
    # stacks below 0.1 % of the samples are noise at this sample count
    kept = {k: n for k, n in merged.items() if n * 1000 >= total}
    lines = [f"{stack} {n}\n" for stack, n in sorted(kept.items())]
    lines.append(f"(stacks under 0.1 %) {total - sum(kept.values())}\n")
    return "".join(lines)


def svg(stacks: Counter[tuple[str, ...]], title: str, width: int = 1400) -> str:
    """
    An icicle-style flame graph: the root at the top, each frame as wide
    as its share of the samples; hovering shows the frame and its share.
    """
    total = sum(stacks.values()) or 1
    tree: dict = {}
    for stack, n in stacks.items():
        node = tree
        for frame in (short(f) for f in stack):
            child = node.setdefault(frame, [0, {}])
            child[0] += n
            node = child[1]
    row = 16
    rects: list[str] = []
    depth_seen = [0]

    def draw(node: dict, x: float, depth: int) -> None:
        depth_seen[0] = max(depth_seen[0], depth)
        for frame, (n, children) in sorted(node.items(), key=lambda kv: -kv[1][0]):
            w = n / total * width
            if w >= 0.5:
                hue = 20 + (hash(frame.split(" (")[-1]) % 40)
                label = html.escape(frame)
                text = label[: int(w / 7)] if w > 30 else ""
                y = 24 + depth * row
                rects.append(
                    f'<g><title>{label} — {n / total:.1%} ({n} samples)</title>'
                    f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row - 1}" '
                    f'fill="hsl({hue},80%,60%)"/>'
                    f'<text x="{x + 3:.1f}" y="{y + 12}">{text}</text></g>'
                )
                draw(children, x, depth + 1)
            x += w

    draw(tree, 0.0, 0)
    height = 24 + (depth_seen[0] + 2) * row
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="monospace" font-size="11">'
        f'<text x="4" y="16" font-size="14">{html.escape(title)} — {total} samples</text>'
        + "".join(rects) + "</svg>\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stacks")
    parser.add_argument("--svg", help="write a flame graph here")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    stacks = read_stacks(args.stacks)
    print("\n".join(summary(stacks, args.top)))
    if args.svg:
        with open(args.svg, "w") as f:
            f.write(svg(stacks, args.stacks))


if __name__ == "__main__":
    main()
