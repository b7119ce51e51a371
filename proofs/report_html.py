"""Self-contained HTML for a verification report: one question/answer row per property."""

from __future__ import annotations

import json
from html import escape

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;width:100%}
th,td{border:1px solid #ccc;padding:.4em .6em;vertical-align:top;text-align:left}
th{background:#f3f3f3}
.proved{background:#e6f4ea;color:#137333;font-weight:bold}
.violated{background:#fce8e6;color:#a50e0e;font-weight:bold}
.unknown{background:#fef7e0;color:#8a6d00;font-weight:bold}
pre{white-space:pre-wrap;margin:0;font-size:.9em}
"""


def _witness(value) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return f"<pre>{escape(value)}</pre>"
    return f"<pre>{escape(json.dumps(value, indent=1))}</pre>"


def render(report) -> str:
    rows = []
    for p in report.properties:
        answer = escape(p.status.value)
        rows.append(
            "<tr>"
            f"<td><code>{escape(p.name)}</code><br><small>{escape(p.family)}</small></td>"
            f"<td>{escape(p.question)}</td>"
            f"<td class=\"{answer}\">{answer}</td>"
            f"<td>{_witness(p.witness)}{'<pre>' + escape(p.detail) + '</pre>' if p.detail else ''}</td>"
            f"<td>{'<pre>' + escape(p.fix) + '</pre>' if p.fix else ''}</td>"
            f"<td>{p.time_s:.3f} s</td>"
            "</tr>"
        )
    inputs = "".join(f"<li>{escape(str(k))}: <code>{escape(str(v))}</code></li>"
                     for k, v in report.inputs.items() if v is not None)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>dualpath verify</title><style>{_STYLE}</style></head><body>"
        f"<h1>dualpath verify</h1><p><strong>{escape(report.summary)}</strong></p>"
        f"<ul>{inputs}</ul>"
        "<table><thead><tr><th>Property</th><th>Question</th><th>Answer</th><th>Witness / evidence</th>"
        f"<th>Config line to change</th><th>Time</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        "</body></html>\n"
    )
