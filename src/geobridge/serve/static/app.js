// GeoBridge map page: plain JS, no build step, no external requests (the world outline comes from this server).
(function () {
  "use strict";

  const SVG_NS = "http://www.w3.org/2000/svg";
  const WORLD = { x: 0, y: 0, w: 360, h: 180 };
  const $ = (id) => document.getElementById(id);
  const state = { queue: [], views: ["drone", "satellite", "street"], result: null, box: { ...WORLD }, nextId: 1, overlays: [] };

  // ---------------------------------------------------------------- projection (equirectangular)
  const px = (lon) => lon + 180;
  const py = (lat) => 90 - lat;

  function el(tag, attrs, parent) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (parent) parent.appendChild(node);
    return node;
  }

  function fmtCoord(lat, lon) {
    const ns = lat >= 0 ? "N" : "S";
    const ew = lon >= 0 ? "E" : "W";
    return `${Math.abs(lat).toFixed(4)}° ${ns}, ${Math.abs(lon).toFixed(4)}° ${ew}`;
  }

  function fmtKm(km) {
    if (km === null || km === undefined || Number.isNaN(km)) return "–";
    return km < 10 ? `${km.toFixed(1)} km` : `${Math.round(km).toLocaleString()} km`;
  }

  // ---------------------------------------------------------------- map
  function drawLand(geojson) {
    const land = $("land");
    land.textContent = "";
    for (const feature of geojson.features || []) {
      const kind = (feature.properties && feature.properties.kind) || "land";
      const geom = feature.geometry || {};
      const polys = geom.type === "Polygon" ? [geom.coordinates] : geom.type === "MultiPolygon" ? geom.coordinates : [];
      let d = "";
      for (const poly of polys) {
        for (const ring of poly) {
          ring.forEach((p, i) => { d += `${i ? "L" : "M"}${px(p[0]).toFixed(2)},${py(p[1]).toFixed(2)}`; });
          d += "Z";
        }
      }
      if (d) el("path", { d, class: kind === "lake" ? "lake" : "land" }, land);
    }
    const source = geojson.properties && geojson.properties.source;
    $("outline-source").textContent = source ? `Outline: ${source}` : "No outline data installed: graticule only";
  }

  function drawGraticule() {
    const g = $("graticule");
    g.textContent = "";
    const box = state.box;
    const span = Math.max(box.w, box.h * 2);
    const steps = [30, 10, 5, 1, 0.5, 0.1, 0.05, 0.01, 0.005, 0.001, 0.0005];
    const step = steps.find((s) => span / s >= 6) || steps[steps.length - 1];
    const digits = step >= 1 ? 0 : Math.ceil(-Math.log10(step) - 1e-9);
    const fs = box.w / 60;
    const lon0 = Math.max(-180, Math.floor((box.x - 180) / step) * step);
    const lon1 = Math.min(180, box.x + box.w - 180 + step);
    const lat0 = Math.max(-90, Math.floor((90 - box.y - box.h) / step) * step);
    const lat1 = Math.min(90, 90 - box.y + step);
    for (let lon = lon0; lon <= lon1; lon += step) {
      el("line", { x1: px(lon), y1: 0, x2: px(lon), y2: 180, class: "grid" }, g);
      const x = px(lon);
      if (x > box.x + fs && x < box.x + box.w - fs) {
        const t = el("text", { x: x + fs * 0.2, y: box.y + box.h - fs * 0.4, class: "grid-label", "font-size": fs }, g);
        t.textContent = `${lon.toFixed(digits)}°`;
      }
    }
    for (let lat = lat0; lat <= lat1; lat += step) {
      el("line", { x1: 0, y1: py(lat), x2: 360, y2: py(lat), class: Math.abs(lat) < step / 2 ? "grid equator" : "grid" }, g);
      const y = py(lat);
      if (y > box.y + fs && y < box.y + box.h - fs) {
        const t = el("text", { x: box.x + fs * 0.3, y: y - fs * 0.2, class: "grid-label", "font-size": fs }, g);
        t.textContent = `${lat.toFixed(digits)}°`;
      }
    }
  }

  function drawOverlays() {
    // reference raster quicklooks, already warped to lon/lat by the server: placed by their bounds alone
    const g = $("overlays");
    g.textContent = "";
    for (const o of state.overlays) {
      const [w, s, e, n] = o.bounds;
      const img = el("image", {
        href: o.url, x: px(w), y: py(n), width: e - w, height: n - s, preserveAspectRatio: "none",
        class: "overlay", "data-overlay": o.id,
      }, g);
      el("title", {}, img).textContent = `Reference raster ${o.name}`;
    }
  }

  function drawFootprints() {
    const g = $("footprints");
    g.textContent = "";
    const r = state.result;
    if (!r) return;
    [...(r.matches || [])].reverse().forEach((m) => {
      if (!m.footprint || !m.footprint.length) return;
      const points = m.footprint.map((p) => `${px(p[0])},${py(p[1])}`).join(" ");
      const poly = el("polygon", { points, class: `footprint${m.rank === 1 ? " top" : ""}`, "data-rank": m.rank }, g);
      el("title", {}, poly).textContent = `#${m.rank} ${m.place_id} footprint${m.gsd_m ? `, ${m.gsd_m.toFixed(2)} m/px` : ""}`;
    });
  }

  function drawMarkers() {
    const g = $("markers");
    g.textContent = "";
    drawFootprints();
    const r = state.result;
    if (!r) return;
    const unit = state.box.w / 360; // map units per "world pixel"; keeps markers a constant size on screen
    const size = Math.max(unit * 2.2, 1e-7);
    [...(r.matches || [])].reverse().forEach((m) => {
      const c = el("circle", {
        cx: px(m.lon), cy: py(m.lat), r: size * (m.rank === 1 ? 1.35 : 1),
        class: `marker match${m.rank === 1 ? " top" : ""}`, "data-rank": m.rank,
      }, g);
      el("title", {}, c).textContent = `#${m.rank} ${m.place_id} (${m.view}) score ${m.score.toFixed(3)}, ${fmtKm(m.distance_km)}`;
      c.addEventListener("mouseenter", () => highlight(m.rank, true));
      c.addEventListener("mouseleave", () => highlight(m.rank, false));
    });
    (r.matches || []).slice(0, 5).forEach((m) => {
      const t = el("text", { x: px(m.lon) + size * 1.4, y: py(m.lat) - size * 1.1, class: "rank-label", "font-size": size * 3 }, g);
      t.textContent = m.rank;
    });
    if (typeof r.lat === "number" && typeof r.lon === "number") {
      const x = px(r.lon), y = py(r.lat);
      el("circle", { cx: x, cy: y, r: size * 4, class: "estimate-ring" }, g);
      const est = el("path", {
        d: star(x, y, size * 2.6, size * 1.1), class: "marker estimate",
      }, g);
      el("title", {}, est).textContent = `Estimate ${fmtCoord(r.lat, r.lon)}`;
    }
  }

  function star(cx, cy, outer, inner) {
    let d = "";
    for (let i = 0; i < 10; i++) {
      const a = (Math.PI / 5) * i - Math.PI / 2;
      const rad = i % 2 ? inner : outer;
      d += `${i ? "L" : "M"}${(cx + rad * Math.cos(a)).toFixed(3)},${(cy + rad * Math.sin(a)).toFixed(3)}`;
    }
    return d + "Z";
  }

  function setBox(box) {
    // keep 2:1 and stay inside the world
    let { x, y, w, h } = box;
    if (w / h > 2) h = w / 2; else w = h * 2;
    w = Math.min(Math.max(w, 0.002), 360); h = w / 2;
    const cx = x + box.w / 2, cy = y + box.h / 2;
    x = Math.min(Math.max(cx - w / 2, 0), 360 - w);
    y = Math.min(Math.max(cy - h / 2, 0), 180 - h);
    state.box = { x, y, w, h };
    $("map").setAttribute("viewBox", `${x} ${y} ${w} ${h}`);
    drawGraticule();
    drawMarkers();
    const fmtDeg = (v) => (v >= 1 ? v.toFixed(0) : v.toPrecision(2));
    $("map-note").textContent = w >= 359 ? "World" : `${fmtDeg(w)}° lon × ${fmtDeg(h)}° lat`;
  }

  function fitResult() {
    const r = state.result;
    if (!r) return setBox(WORLD);
    const pts = (r.matches || []).map((m) => [m.lon, m.lat]);
    const tiles = (r.matches || []).filter((m) => m.footprint && m.footprint.length);
    for (const m of tiles) pts.push(...m.footprint);
    if (typeof r.lat === "number") pts.push([r.lon, r.lat]);
    fitPoints(pts, tiles.length ? 0.002 : 16);
  }

  function fitPoints(pts, minW) {
    if (!pts.length) return setBox(WORLD);
    const xs = pts.map((p) => px(p[0])), ys = pts.map((p) => py(p[1]));
    const x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
    const w = Math.max(x1 - x0, minW) * 1.3, h = Math.max(y1 - y0, minW / 2) * 1.3;
    setBox({ x: (x0 + x1) / 2 - w / 2, y: (y0 + y1) / 2 - h / 2, w, h });
  }

  function enablePanZoom() {
    const svg = $("map");
    const toMap = (evt) => {
      const rect = svg.getBoundingClientRect();
      const b = state.box;
      const scale = Math.min(rect.width / b.w, rect.height / b.h);
      const ox = (rect.width - b.w * scale) / 2, oy = (rect.height - b.h * scale) / 2;
      return [b.x + (evt.clientX - rect.left - ox) / scale, b.y + (evt.clientY - rect.top - oy) / scale, scale];
    };
    svg.addEventListener("wheel", (evt) => {
      evt.preventDefault();
      const [mx, my] = toMap(evt);
      const f = evt.deltaY > 0 ? 1.25 : 0.8;
      const b = state.box;
      setBox({ x: mx - (mx - b.x) * f, y: my - (my - b.y) * f, w: b.w * f, h: b.h * f });
    }, { passive: false });
    let drag = null;
    svg.addEventListener("pointerdown", (evt) => { drag = { x: evt.clientX, y: evt.clientY, box: { ...state.box } }; });
    window.addEventListener("pointerup", () => { drag = null; });
    svg.addEventListener("pointermove", (evt) => {
      if (!drag) return;
      const [, , scale] = toMap(evt);
      setBox({ ...drag.box, x: drag.box.x - (evt.clientX - drag.x) / scale, y: drag.box.y - (evt.clientY - drag.y) / scale });
    });
  }

  function highlight(rank, on) {
    document.querySelectorAll(`[data-rank="${rank}"]`).forEach((n) => n.classList.toggle("hover", on));
  }

  // ---------------------------------------------------------------- the query form
  function addFiles(files) {
    for (const file of files) {
      state.queue.push({ id: state.nextId++, file, view: guessView(file.name), url: URL.createObjectURL(file) });
    }
    renderQueue();
  }

  function guessView(name) {
    const lower = name.toLowerCase();
    return state.views.find((v) => lower.includes(v)) || "drone";
  }

  function renderQueue() {
    const ul = $("queue");
    ul.textContent = "";
    for (const item of state.queue) {
      const li = document.createElement("li");
      li.className = "queued";
      const img = document.createElement("img");
      img.src = item.url; img.alt = "";
      const name = document.createElement("span");
      name.className = "name"; name.textContent = item.file.name; name.title = item.file.name;
      const select = document.createElement("select");
      select.setAttribute("aria-label", `view of ${item.file.name}`);
      select.className = "view";
      for (const v of state.views) {
        const opt = document.createElement("option");
        opt.value = v; opt.textContent = v; opt.selected = v === item.view;
        select.appendChild(opt);
      }
      select.addEventListener("change", () => { item.view = select.value; });
      const remove = document.createElement("button");
      remove.type = "button"; remove.className = "remove"; remove.textContent = "×";
      remove.setAttribute("aria-label", `remove ${item.file.name}`);
      remove.addEventListener("click", () => {
        URL.revokeObjectURL(item.url);
        state.queue = state.queue.filter((q) => q.id !== item.id);
        renderQueue();
      });
      li.append(img, name, select, remove);
      ul.appendChild(li);
    }
  }

  function showError(message) {
    const box = $("error");
    box.textContent = message;
    box.hidden = !message;
  }

  async function submit(evt) {
    evt.preventDefault();
    showError("");
    const text = $("text").value.trim();
    if (!state.queue.length && !text) {
      showError("Add at least one image or a description.");
      return;
    }
    const form = new FormData();
    for (const item of state.queue) {
      form.append("images", item.file, item.file.name);
      form.append("views", item.view);
    }
    if (text) form.append("text", text);
    form.append("top_k", $("top_k").value || "10");
    form.append("fusion", $("fusion").value);
    const button = $("submit");
    button.disabled = true; button.textContent = "Locating…";
    const t0 = performance.now();
    try {
      const response = await fetch("/locate", { method: "POST", body: form });
      const body = await response.json().catch(() => ({ error: "bad_response", detail: `HTTP ${response.status}` }));
      if (!response.ok) {
        showError(`${body.detail || body.error || "request failed"} (${body.error || response.status})`);
        return;
      }
      showResult(body, performance.now() - t0);
    } catch (err) {
      showError(`Could not reach the service: ${err}`);
    } finally {
      button.disabled = false; button.textContent = "Locate";
    }
  }

  function showResult(result, ms) {
    state.result = result;
    $("empty").hidden = true;
    $("estimate").hidden = false;
    $("matches-title").hidden = false;
    $("fit").disabled = false;
    $("estimate-coords").textContent = typeof result.lat === "number" ? fmtCoord(result.lat, result.lon) : "–";
    const conf = Math.max(0, Math.min(1, Number(result.confidence) || 0));
    $("confidence-value").textContent = `${(conf * 100).toFixed(0)}%`;
    $("confidence-bar").style.width = `${(conf * 100).toFixed(1)}%`;
    $("took").textContent = result.fusion ? `${Math.round(ms)} ms · ${result.fusion} fusion` : `${Math.round(ms)} ms`;
    const ol = $("matches");
    ol.textContent = "";
    for (const m of result.matches || []) {
      const li = document.createElement("li");
      li.className = "match";
      li.dataset.rank = m.rank;
      const thumb = document.createElement("div");
      thumb.className = "thumb";
      if (m.thumbnail_url) {
        const img = document.createElement("img");
        img.src = m.thumbnail_url; img.alt = `${m.place_id} ${m.view}`; img.loading = "lazy";
        img.addEventListener("error", () => { img.remove(); thumb.append("no image"); });
        thumb.appendChild(img);
      } else {
        thumb.append("no image");
      }
      const rank = document.createElement("span");
      rank.className = "rank"; rank.textContent = `#${m.rank}`;
      thumb.appendChild(rank);
      const meta = document.createElement("div");
      meta.className = "meta";
      meta.innerHTML = '<div class="place"></div><div class="nums"><span class="score"></span><span class="dist"></span></div>' +
        '<div class="nums"><span class="view"></span><span class="ll"></span></div>';
      meta.querySelector(".place").textContent = m.place_id;
      meta.querySelector(".score").textContent = `score ${Number(m.score).toFixed(3)}`;
      meta.querySelector(".score").title = result.score_meaning || "";
      meta.querySelector(".dist").textContent = fmtKm(m.distance_km);
      meta.querySelector(".view").textContent = m.view;
      meta.querySelector(".ll").textContent = `${m.lat.toFixed(2)}, ${m.lon.toFixed(2)}`;
      li.append(thumb, meta);
      li.addEventListener("mouseenter", () => highlight(m.rank, true));
      li.addEventListener("mouseleave", () => highlight(m.rank, false));
      ol.appendChild(li);
    }
    fitResult();
    document.body.dataset.state = "done";
  }

  // ---------------------------------------------------------------- start
  async function start() {
    enablePanZoom();
    setBox(WORLD);
    $("files").addEventListener("change", (evt) => { addFiles(evt.target.files); evt.target.value = ""; });
    const drop = $("drop");
    drop.addEventListener("dragover", (evt) => { evt.preventDefault(); drop.classList.add("over"); });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (evt) => { evt.preventDefault(); drop.classList.remove("over"); addFiles(evt.dataTransfer.files); });
    $("locate-form").addEventListener("submit", submit);
    $("fit").addEventListener("click", fitResult);
    $("world").addEventListener("click", () => setBox(WORLD));
    try {
      const health = await (await fetch("/health")).json();
      state.views = health.views || state.views;
      const svc = $("service");
      svc.textContent = `${health.model} · ${health.index_size.toLocaleString()} vectors`;
      svc.className = "service ok";
      const lim = health.limits || {};
      if (lim.max_upload_bytes) {
        $("limits").textContent = `PNG, JPEG or WebP · up to ${(lim.max_upload_bytes / 1048576).toFixed(0)} MiB and ${lim.max_images} images`;
      }
      if (lim.max_top_k) $("top_k").max = lim.max_top_k;
      for (const name of health.fusions || []) {
        if (![...$("fusion").options].some((o) => o.value === name)) $("fusion").add(new Option(name, name));
      }
    } catch (err) {
      $("service").textContent = "service unreachable";
      $("service").className = "service down";
    }
    try {
      state.overlays = (await (await fetch("/overlays.json")).json()).overlays || [];
      drawOverlays();
      if (state.overlays.length && !state.result) {
        fitPoints(state.overlays.flatMap((o) => [[o.bounds[0], o.bounds[1]], [o.bounds[2], o.bounds[3]]]), 0.002);
      }
    } catch (err) {
      state.overlays = [];
    }
    try {
      drawLand(await (await fetch("/world.geojson")).json());
    } catch (err) {
      $("outline-source").textContent = "World outline unavailable: graticule only";
    }
    document.body.dataset.ready = "1";
  }

  start();
})();
