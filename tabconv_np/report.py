"""Reports in plain words: settings as command lines; savings in plain numbers: "95% fewer operations", "4.8x more arithmetic", "3.9x larger than the weights".

The text of ``tabconv convert`` and ``tabconv demo`` reports, from
:func:`tabconv_np.ops.op_reduction`'s dict: never a negative percentage.
"""
import shlex

MIB = 2 ** 20


def format_setting(value):
    """The command-line text of a setting: the inverse of :func:`parse_setting`.

    ``8`` -> "8", ``[4, 8]`` -> "4,8", ``{"layer1.*": "D/28", "*": 256}`` -> "layer1.*=D/28,*=256".
    """
    if isinstance(value, dict):
        return ",".join(f"{k}={format_setting(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ",".join(format_setting(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def command_line(options):
    """``--name value`` items of ``options`` ({name: value}; ``True``: a bare flag), shell-quoted:
    settings as the user would type them."""
    parts = []
    for k, v in options.items():
        parts.append("--" + k.replace("_", "-"))
        if v is not True:
            parts.append(shlex.quote(format_setting(v)))
    return " ".join(parts)



def compared(cost, exact, noun):
    """``"95.3% fewer <noun>"`` when ``cost < exact``, ``"4.8x more <noun>"`` when above, ``"the same <noun>"``."""
    if cost == exact:
        return f"the same {noun}"
    if cost < exact:
        return f"{100 * (1 - cost / exact):.1f}% fewer {noun}"
    return f"{cost / exact:.1f}x more {noun}"


def size_ratio(nbytes, weights_bytes):
    """``"3.9x larger than the float32 weights"`` or ``"0.46x the float32 weights"``."""
    r = nbytes / weights_bytes
    return f"{r:.1f}x larger than the float32 weights" if r > 1 else f"{r:.2f}x the float32 weights"


def reduction_lines(red):
    """Three report lines: operations in the paper and the full convention, storage.

    Parameters
    ----------
    red : dict
        :func:`tabconv_np.ops.op_reduction` of a converted network against its exact one.

    Returns
    -------
    list of str
        Each starting with an 11-character label column (``"ops"``, ``""``, ``"storage"``).
    """
    p, f, st = red["paper"], red["full"], red["storage"]
    return [
        f"{'ops':<11}{compared(p['cost'], p['exact'], 'operations')} (paper convention: encoding not "
        f"counted; {p['cost'] / 1e6:.2f} M operations vs {p['exact'] / 1e6:.2f} M MACs)",
        f"{'':<11}{compared(f['cost'], f['exact'], 'arithmetic operations')} (full convention: every "
        f"arithmetic operation, encoding included; {f['cost'] / 1e6:.2f} M vs {f['exact'] / 1e6:.2f} M)",
        f"{'storage':<11}{st['network_bytes'] / MIB:.1f} MiB, "
        f"{size_ratio(st['network_bytes'], st['exact_network_bytes'])} ({st['exact_network_bytes'] / MIB:.1f} MiB); "
        f"converted layers {st['table_bytes'] / MIB:.1f} MiB replace {st['replaced_weight_bytes'] / MIB:.1f} MiB "
        f"of weights"]


def int8_line(totals, exact_totals):
    """The ``ops`` report line of an int8 network: its int8 MACs next to the float MACs they replace.

    ``totals``, ``exact_totals``: :attr:`tabconv_np.ops.OpCount.total` of the int8 and the exact
    network (float MACs in ``macs``, 8-bit ones in ``int8_macs``).
    """
    t, e = totals, exact_totals
    return (f"{'ops':<11}{t['int8_macs'] / 1e6:.2f} M int8 MACs + {t['macs'] / 1e6:.2f} M float MACs "
            f"(exact: {e['macs'] / 1e6:.2f} M float MACs); {t['quant_ops'] / 1e6:.2f} M activations "
            f"quantised, {t['dequant_mults'] / 1e6:.2f} M requantising multiplies")


def binary_line(totals, exact_totals):
    """The ``ops`` report line of a binary or ternary network: its bit operations next to the float MACs.

    ``totals``, ``exact_totals``: :attr:`tabconv_np.ops.OpCount.total` of the converted and the exact network.
    """
    t, e = totals, exact_totals
    return (f"{'ops':<11}{t['popcounts'] / 1e6:.2f} M popcounts + {t['bit_ops'] / 1e6:.2f} M bit ops + "
            f"{t['adds'] / 1e6:.2f} M adds + {t['macs'] / 1e6:.2f} M float MACs (exact: {e['macs'] / 1e6:.2f} M "
            f"float MACs); {t['binarize_ops'] / 1e6:.2f} M values binarised, {t['dequant_mults'] / 1e6:.2f} M "
            f"scale multiplies")
