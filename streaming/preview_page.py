"""The preview page that :mod:`spgim.streaming.preview` serves at ``/``: plain HTML and a little script.

The job's figures (``/stats``, polled twice a second, as the job's summary line gives them) sit above the
composite, which stands beside the input and the alpha: ``<img>`` elements on the server's MJPEG streams.
When the job ends the server goes away and the page says so, keeping the last pictures and figures.
"""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>spgim matte preview</title>
<style>
  body { margin: 0; padding: 1rem; background: #15171a; color: #e6e6e6; font: 14px/1.4 system-ui, sans-serif; }
  h1 { font-size: 1.1rem; margin: 0 0 0.75rem; font-weight: 600; }
  h1 span { font-weight: 400; margin-left: 0.75rem; }
  #state { color: #9ad; }
  #source { color: #999; }
  .figures { display: flex; flex-wrap: wrap; gap: 0.5rem; margin-bottom: 0.75rem; }
  .figures div { background: #22262b; padding: 0.35rem 0.75rem; min-width: 7rem; }
  .figures small { display: block; color: #999; }
  .figures b { font-weight: 600; font-size: 1.05rem; font-variant-numeric: tabular-nums; }
  main { display: grid; grid-template-columns: 2fr 1fr; gap: 0.75rem; align-items: start; }
  figure { margin: 0; background: #000; }
  figure img { display: block; width: 100%; height: auto; min-height: 4rem; }
  figcaption { padding: 0.25rem 0.5rem; background: #22262b; color: #bbb; }
  .side { display: grid; gap: 0.75rem; }
  #summary { margin-top: 0.75rem; color: #999; font-family: ui-monospace, monospace; font-size: 12px; }
</style>
</head>
<body>
<h1>spgim matte<span id="state">starting</span><span id="source"></span></h1>
<div class="figures">
  <div><small>frames</small><b id="frames">-</b></div>
  <div><small>frames/s</small><b id="fps">-</b></div>
  <div><small>latency p50 / p90</small><b id="latency">-</b></div>
  <div><small>dropped</small><b id="dropped">-</b></div>
  <div><small>keyframes</small><b id="keyframes">-</b></div>
  <div><small>backend</small><b id="backend">-</b></div>
  <div><small>wall time</small><b id="wall">-</b></div>
</div>
<main>
  <figure><img id="composite" src="/composite.mjpg" alt="composite"><figcaption>composite</figcaption></figure>
  <div class="side">
    <figure><img id="input" src="/input.mjpg" alt="input"><figcaption>input</figcaption></figure>
    <figure><img id="alpha" src="/alpha.mjpg" alt="alpha"><figcaption>alpha</figcaption></figure>
  </div>
</main>
<div id="summary"></div>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const ms = (seconds) => (seconds === null ? "-" : `${Math.round(seconds * 1000)} ms`);
let ended = false;

function keyframes(f) {
  if (!f.keyframe_interval) return "SPD on every frame";
  const ramp = f.keyframe_ramp > 1 ? `, ramp ${f.keyframe_ramp}` : "";
  return `${f.keyframes ?? "-"} (interval ${f.keyframe_interval}${ramp})`;
}

function show(stats) {
  $("state").textContent = stats.state;
  if (stats.state !== "running") return;
  const f = stats.figures;
  $("source").textContent = f.source;
  $("backend").textContent = f.backend;
  $("frames").textContent = `${f.frames_out} out, ${f.frames_in} in`;
  $("fps").textContent = f.fps.toFixed(2);
  // As the summary line: capture-to-output latency is a live source's figure.
  $("latency").textContent = f.live ? `${ms(f.latency_p50_s)} / ${ms(f.latency_p90_s)}` : "live only";
  $("dropped").textContent = `${f.dropped}`;
  $("keyframes").textContent = keyframes(f);
  $("wall").textContent = `${f.wall_s.toFixed(1)} s`;
  $("summary").textContent = f.summary;
}

async function poll() {
  try {
    const answer = await fetch("/stats", { cache: "no-store" });
    show(await answer.json());
    setTimeout(poll, 500);
  } catch (error) {
    ended = true;
    $("state").textContent = "ended";
  }
}

// A picture whose stream broke while the job still runs is asked for again.
for (const name of ["composite", "input", "alpha"]) {
  const image = $(name);
  image.addEventListener("error", () => {
    if (!ended) setTimeout(() => { image.src = `/${name}.mjpg?${Date.now()}`; }, 1000);
  });
}
poll();
</script>
</body>
</html>
"""
