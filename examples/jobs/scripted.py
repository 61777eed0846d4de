"""What the bundled scripted model answers in the two jobs, turn by turn: the tool calls a real model
would make for these prompts (the CLI's Write and Bash tools), so everything but the model runs for real.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sandbox_lifecycle.scripted_model import Reply, Step, bash, working_directory, write

SAMPLE_PROJECT = Path(__file__).resolve().parent.parent / "dbt_project"

WRITEBACK_PROMPTS = (
    "Add a metric average_order_value (the average of amount) to the orders model.",
    "Describe average_order_value as 'Average order total in dollars'.",
)
DATA_APP_PROMPTS = (
    "Build a small page showing revenue by month; build it into dist/.",
    "Rename the page to 'Revenue by month (v2)' and rebuild.",
)

_METRIC = """            average_order_value:
              type: average
              format: usd
              description: {description}
"""


def _schema(description: str) -> str:
    schema = (SAMPLE_PROJECT / "models" / "schema.yml").read_text()
    anchor = "              description: Sum of order amounts.\n"
    assert anchor in schema, "the sample project's schema.yml changed: update the scripted edit"
    return schema.replace(anchor, anchor + _METRIC.format(description=description))


def writeback_turns() -> list[list[Step]]:
    def edit(description: str) -> Step:
        return lambda body: Reply(
            "I'll add the metric to models/schema.yml.",
            [write(f"{working_directory(body)}/models/schema.yml", _schema(description))],
        )

    return [
        [
            edit("Average order amount."),
            Reply("", [bash("git diff --stat", "show what changed")]),
            Reply("Added average_order_value to orders."),
        ],
        [
            edit("Average order total in dollars"),
            Reply("Updated the description of average_order_value."),
        ],
    ]


_BUILD = """// Builds src/ into dist/: no dependencies, so it runs without any registry.
const fs = require("fs");
fs.mkdirSync("dist", { recursive: true });
const html = fs.readFileSync("src/index.html", "utf8");
const data = JSON.parse(fs.readFileSync("src/data.json", "utf8"));
const rows = data.map((r) => `<tr><td>${r.month}</td><td>${r.revenue}</td></tr>`).join("");
fs.writeFileSync("dist/index.html", html.replace("<!--rows-->", rows));
fs.writeFileSync("dist/build.json", JSON.stringify({ builtAt: new Date().toISOString(), rows: data.length }));
console.log(`built dist/ with ${data.length} rows`);
"""

_DATA = '[{"month": "2024-01", "revenue": 61.5}, {"month": "2024-02", "revenue": 100.35}]\n'


def _page(title: str) -> str:
    return (
        f"<!doctype html>\n<html><head><title>{title}</title></head>\n"
        f"<body><h1>{title}</h1><table><tr><th>Month</th><th>Revenue</th></tr><!--rows--></table></body></html>\n"
    )


def data_app_turns() -> list[list[Step]]:
    def files(title: str, with_build: bool) -> Step:
        def reply(body: dict[str, Any]) -> Reply:
            app = working_directory(body)
            calls = [write(f"{app}/src/index.html", _page(title))]
            if with_build:
                calls += [write(f"{app}/src/data.json", _DATA), write(f"{app}/build.js", _BUILD)]
            return Reply("Writing the app.", calls)

        return reply

    return [
        [
            files("Revenue by month", True),
            Reply("", [bash("node build.js && ls dist", "build the app")]),
            Reply("Built the page into dist/."),
        ],
        [
            files("Revenue by month (v2)", False),
            Reply("", [bash("node build.js", "rebuild")]),
            Reply("Renamed and rebuilt."),
        ],
    ]
