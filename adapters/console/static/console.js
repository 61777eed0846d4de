// The console's only script: the live feed (server-sent events) and the fleet filters' auto-submit.
// Values from the log are set as text (textContent), never as HTML.
"use strict";

function cell(row, text, href) {
  const td = row.insertCell();
  if (href) {
    const a = document.createElement("a");
    a.href = href;
    a.textContent = text;
    td.appendChild(a);
  } else {
    td.textContent = text === null || text === undefined ? "-" : String(text);
  }
}

function follow(table) {
  const status = document.getElementById("live-status");
  const body = table.tBodies[0];
  const source = new EventSource("live/events?after=" + encodeURIComponent(table.dataset.after || "0"));
  source.onopen = () => { status.textContent = "following the log"; status.className = "status on"; };
  source.onerror = () => { status.textContent = "reconnecting..."; status.className = "status off"; };
  source.addEventListener("sandbox", (message) => {
    const e = JSON.parse(message.data);
    const row = body.insertRow(0);
    row.className = "fresh";
    row.dataset.position = e.position;
    cell(row, e.position);
    cell(row, e.at);
    cell(row, e.sandbox, e.href);
    cell(row, e.version);
    cell(row, e.type);
    cell(row, e.reason);
    cell(row, e.actor);
    while (body.rows.length > 500) body.deleteRow(body.rows.length - 1);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const live = document.getElementById("live");
  if (live) follow(live);
  for (const select of document.querySelectorAll("form.filters select")) {
    select.addEventListener("change", () => select.form.submit());
  }
});
