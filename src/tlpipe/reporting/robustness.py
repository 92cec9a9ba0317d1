"""comparison.md's spatial-invariance section, from reports/robustness.json (stage robustness)."""

from tlpipe.config import HEAD_NAMES


def robustness_markdown(robustness: dict) -> list[str]:
    lines = ["## Spatial invariance (test images shifted)", ""]
    if not robustness["enabled"]:
        return lines + ["Off (`robustness.shifts: 0`).", ""]
    shifts = [name for name in robustness[HEAD_NAMES[0]]["per_shift"] if name != "none"]
    lines += [f"Test images shifted by {robustness['shift_pixels']} px ({', '.join(shifts)}; border: edge replicated), "
              f"through the trunk again: {robustness['trunk_images']:,} images in {robustness['seconds']:.1f} s "
              f"on {robustness['device']}.", "",
              "| head | unshifted | " + " | ".join(shifts) + " | drop (mean) |",
              "|---" * (len(shifts) + 3) + "|"]
    for head in HEAD_NAMES:
        result = robustness[head]
        lines.append(f"| {head} | {result['accuracy']:.1%} | " + " | ".join(f"{result['per_shift'][name]:.1%}" for name in shifts)
                     + f" | {result['drop'] * 100:+.1f} pts |")
    return lines + [""]
