"""comparison.md's spatial-invariance section: the shifted test images' cost (reports/features.json)
and each head's accuracy on them (reports/eval/<head>/robustness.json, the train stage)."""

from tlpipe.config import HEAD_NAMES


def robustness_markdown(features: dict, by_head: dict[str, dict]) -> list[str]:
    lines = ["## Spatial invariance (test images shifted)", ""]
    if not features["shifts"]:
        return lines + ["Off (`robustness.shifts: 0`).", ""]
    shifts = list(features["shifts"])
    lines += [f"Test images shifted by {features['shift_pixels']} px ({', '.join(shifts)}; border: edge replicated), "
              f"through the trunk in the features stage: {features['shifted_images']:,} images in "
              f"{features['shifted_seconds']:.1f} s on {features['device']}.", "",
              "| head | unshifted | " + " | ".join(shifts) + " | drop (mean) |",
              "|---" * (len(shifts) + 3) + "|"]
    for head in HEAD_NAMES:
        result = by_head[head]
        lines.append(f"| {head} | {result['accuracy']:.1%} | " + " | ".join(f"{result['per_shift'][name]:.1%}" for name in shifts)
                     + f" | {result['drop'] * 100:+.1f} pts |")
    return lines + [""]
