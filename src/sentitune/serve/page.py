"""The self-contained page at `/`: a review box that calls /predict, no server-side templates, nothing loaded
from elsewhere."""


from __future__ import annotations

# -------------------------------------------------------------------------------------------- the page

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>sentitune</title>
<style>
  body { font: 16px/1.5 system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
  textarea, input { width: 100%; box-sizing: border-box; font: inherit; padding: .4rem; }
  button { font: inherit; padding: .4rem 1.2rem; margin: .6rem 0; }
  #label { font-size: 1.4rem; }
  table { border-collapse: collapse; }
  td { padding: .15rem .6rem .15rem 0; }
  .bar { display: inline-block; height: .8rem; background: #4a7bd0; }
  #error { color: #b00020; }
  small { color: #666; }
</style>
</head>
<body>
<h1>sentitune <small id="run"></small></h1>
<form id="form">
  <label for="text">A review</label>
  <textarea id="text" rows="8" placeholder="Type or paste a review..."></textarea>
  <div id="target-row" hidden><label for="target">Target (the sentiment toward what?)</label>
    <input id="target"></div>
  <button id="classify" type="submit">Classify</button>
</form>
<div id="result" hidden>
  <p>Label: <strong id="label"></strong> (<span id="probability"></span>)</p>
  <table id="probs"></table>
</div>
<p id="error" role="alert"></p>
<p><small>API: <a href="docs">docs</a>, <a href="openapi.json">openapi.json</a>,
  <a href="metadata">metadata</a>, <a href="health">health</a></small></p>
<script>
const $ = (id) => document.getElementById(id);
fetch("metadata").then((r) => r.json()).then((m) => {
  $("run").textContent = m.run + " (" + m.method + ", " + (m.base_model || "tfidf") + ")";
  $("target-row").hidden = !m.needs_target;
});
$("form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("error").textContent = "";
  $("result").hidden = true;
  $("label").textContent = "";
  $("classify").disabled = true;
  const body = { text: $("text").value };
  if (!$("target-row").hidden) body.target = $("target").value;
  try {
    const response = await fetch("predict", {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
    const data = await response.json();
    if (!response.ok) { $("error").textContent = data.error || response.statusText; return; }
    $("probability").textContent = (100 * data.probability).toFixed(1) + "%";
    const table = $("probs");
    table.replaceChildren();
    for (const [name, p] of Object.entries(data.probs)) {
      const row = table.insertRow();
      row.insertCell().textContent = name;
      row.insertCell().textContent = p.toFixed(4);
      const bar = document.createElement("span");
      bar.className = "bar";
      bar.style.width = (10 * p).toFixed(2) + "rem";
      row.insertCell().append(bar);
    }
    $("label").textContent = data.label;
    $("result").hidden = false;
  } catch (error) {
    $("error").textContent = String(error);
  } finally {
    $("classify").disabled = false;
  }
});
</script>
</body>
</html>
"""
