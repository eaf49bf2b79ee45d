// The dashboard's own script: live pages over the event streams (polling GET /jobs/{id}/metrics when
// EventSource fails), uPlot curves, the predict panel, and small form helpers. The pages read fine
// without it. No build step: plain ES2020, loaded with `defer` after htmx and uPlot.
(() => {
  "use strict";
  const base = document.body.dataset.base || "";
  const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";
  const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
  const MAX_POINTS = 2000; // per curve; more are downsampled with LTTB (service/ui/lttb.py)
  const COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"];
  const api = (url, options = {}) =>
    fetch(url, { credentials: "same-origin", ...options, headers: { "X-CSRF-Token": csrf, ...(options.headers || {}) } });

  // ------------------------------------------------------------------ LTTB, as service/ui/lttb.py
  function lttbIndices(xs, ys, threshold) {
    const n = xs.length;
    if (threshold >= n || threshold < 3) return xs.map((_, i) => i);
    const keep = [0];
    const bucket = (n - 2) / (threshold - 2);
    let a = 0;
    for (let i = 0; i < threshold - 2; i++) {
      const ns = Math.floor((i + 1) * bucket) + 1, ne = Math.min(Math.floor((i + 2) * bucket) + 1, n);
      let ax = 0, ay = 0;
      for (let j = ns; j < ne; j++) { ax += xs[j]; ay += ys[j] ?? 0; }
      ax /= ne - ns; ay /= ne - ns;
      const s = Math.floor(i * bucket) + 1, e = Math.floor((i + 1) * bucket) + 1;
      let best = s, bestArea = -1;
      for (let j = s; j < e; j++) {
        const area = Math.abs((xs[a] - ax) * ((ys[j] ?? 0) - (ys[a] ?? 0)) - (xs[a] - xs[j]) * (ay - (ys[a] ?? 0)));
        if (area > bestArea) { best = j; bestArea = area; }
      }
      keep.push(best);
      a = best;
    }
    keep.push(n - 1);
    return keep;
  }

  function downsample(data) { // data: [xs, ...ys]; keeps the first series' shape
    if (data[0].length <= MAX_POINTS) return data;
    const keep = lttbIndices(data[0], data[1] || data[0], MAX_POINTS);
    return data.map((column) => keep.map((i) => column[i]));
  }

  // ------------------------------------------------------------------ charts
  const tick = (v) => (v === 0 ? "0" : Math.abs(v) < 0.01 ? v.toExponential(1) : Math.abs(v) >= 1000 ? v.toLocaleString("en") : String(+v.toPrecision(3)));
  function makeChart(el, labels) {
    const series = [{ label: "epoch" }].concat(labels.map((label, i) => ({
      label, stroke: COLOURS[i % COLOURS.length], width: 2, spanGaps: true, points: { size: 5 },
    })));
    const empty = [[]].concat(labels.map(() => []));
    const width = Math.max(el.clientWidth || 0, 280);
    const plot = new uPlot({
      title: el.dataset.title, width, height: 220, series,
      scales: { x: { time: false } },
      axes: [{ label: "epoch", incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500] }, { size: 60, values: (u, ticks) => ticks.map(tick) }],
    }, empty, el);
    return {
      set(data) {
        plot.setData(downsample(data));
        el.dataset.points = String(data.slice(1).reduce((n, ys) => n + ys.filter((y) => y != null).length, 0));
      },
      plot,
    };
  }

  // Epoch rows keyed "epoch-phase"; a row for epoch E drops that phase's rows after E (a resumed
  // attempt trains them again).
  class Epochs {
    constructor() { this.rows = new Map(); }
    put(row) {
      for (const [key, old] of this.rows) if (old.phase === row.phase && old.epoch > row.epoch) this.rows.delete(key);
      this.rows.set(`${row.epoch}-${row.phase}`, row);
    }
    last() { return Math.max(0, ...[...this.rows.values()].map((r) => r.epoch)); }
    columns(names) { // names like "val_accuracy" -> [epochs, ...values]
      const epochs = [...new Set([...this.rows.values()].map((r) => r.epoch))].sort((a, b) => a - b);
      return [epochs].concat(names.map((name) => {
        const [phase, ...rest] = name.split("_");
        const measure = rest.join("_");
        return epochs.map((e) => this.rows.get(`${e}-${phase}`)?.[measure] ?? null);
      }));
    }
    static fromCurves(curves) {
      const epochs = new Epochs();
      (curves.epoch || []).forEach((epoch, i) => {
        for (const phase of ["train", "val"]) {
          const row = { epoch, phase };
          let any = false;
          for (const m of ["loss", "accuracy", "lr", "images_per_second"]) {
            const v = curves[`${phase}_${m}`]?.[i];
            if (v != null) { row[m] = v; any = true; }
          }
          if (any) epochs.put(row);
        }
      });
      return epochs;
    }
  }

  const readJson = (id) => JSON.parse(document.getElementById(id)?.textContent || "null");
  const pct = (x) => `${(100 * x).toFixed(2)}%`;
  const utc = (iso) => (iso ? `${iso.replace("T", " ").slice(0, 19)} UTC` : ""); // as the server writes it

  function setField(scope, name, apply) {
    scope.querySelectorAll(`[data-field="${name}"]`).forEach(apply);
  }

  function showStatus(scope, status) {
    setField(scope, "status", (el) => { el.textContent = status; el.className = `status status-${status}`; });
  }

  function showProgress(scope, progress) {
    setField(scope, "progress", (el) => {
      el.querySelector("progress").value = progress;
      el.querySelector(".pct").textContent = `${Math.round(progress * 100)}%`;
    });
  }

  // ------------------------------------------------------------------ live streams
  // onEvent(name, data) for each event; the stream is closed on `end`. When EventSource gives up
  // (or does not exist), fallback() polls instead.
  function follow(url, onEvent, fallback) {
    if (!window.EventSource) { fallback?.(); return null; }
    const source = new EventSource(url);
    for (const name of ["epoch", "status", "job"]) {
      source.addEventListener(name, (e) => onEvent(name, JSON.parse(e.data)));
    }
    source.addEventListener("end", () => { source.close(); onEvent("end", {}); });
    source.onerror = () => { if (source.readyState === EventSource.CLOSED) fallback?.(); };
    return source;
  }

  function swapIn(url, selector) {
    if (window.htmx) return htmx.ajax("GET", url, { target: selector, swap: "outerHTML" });
    return fetch(url, { credentials: "same-origin" }).then((r) => r.text()).then((html) => {
      const doc = new DOMParser().parseFromString(html, "text/html");
      document.querySelector(selector)?.replaceWith(doc.querySelector(selector));
    });
  }

  // ------------------------------------------------------------------ the job page
  function jobPage(section) {
    const epochs = Epochs.fromCurves(readJson("curves-data") || {});
    const charts = [...section.querySelectorAll(".chart[data-series]")].map((el) => {
      const spec = el.dataset.series.split(",").map((s) => s.split(":"));
      return { chart: makeChart(el, spec.map(([, label]) => label)), names: spec.map(([name]) => name) };
    });
    const table = section.querySelector("#epochs-table tbody");
    const redraw = () => charts.forEach(({ chart, names }) => chart.set(epochs.columns(names)));
    redraw();
    if (!section.dataset.events) return;

    const addRow = (row) => {
      epochs.put(row);
      const key = `${row.epoch}-${row.phase}`;
      let tr = table.querySelector(`tr[data-key="${key}"]`);
      if (!tr) { tr = document.createElement("tr"); tr.dataset.key = key; table.appendChild(tr); }
      tr.innerHTML = [row.epoch, row.phase, row.loss.toFixed(4), pct(row.accuracy), row.lr.toExponential(2),
        row.seconds.toFixed(2), row.images_per_second.toFixed(0)]
        .map((v, i) => `<td${i === 1 ? "" : ' class="num"'}>${v}</td>`).join("");
    };
    let ended = false;
    const finish = () => {
      if (ended) return;
      ended = true;
      section.querySelector("#cancel-form")?.remove();
      swapIn(section.dataset.results, "#job-results");
    };
    const showJob = (job) => {
      showStatus(section, job.status);
      showProgress(section, job.progress);
      setField(section, "epoch", (el) => { el.textContent = job.current_epoch; });
      setField(section, "error", (el) => { el.textContent = job.error || ""; });
      setField(section, "finished", (el) => { el.textContent = utc(job.finished_at); });
      if (TERMINAL.has(job.status)) finish();
    };
    let pending = false; // redraw at most once per animation frame: a resume can bring many rows
    const schedule = () => { if (!pending) { pending = true; requestAnimationFrame(() => { pending = false; redraw(); }); } };

    const poll = async () => { // GET /jobs/{id}/metrics?since_epoch=N, the fallback of the stream
      section.dataset.mode = "polling";
      while (!ended) {
        try {
          const metrics = await (await api(`${section.dataset.metrics}?since_epoch=${epochs.last()}`)).json();
          metrics.epochs.forEach(addRow);
          schedule();
          showJob(await (await api(section.dataset.statusUrl)).json());
        } catch (e) { /* the next round tries again */ }
        await new Promise((r) => setTimeout(r, 2000));
      }
    };
    section.dataset.mode = "stream";
    follow(section.dataset.events, (name, data) => {
      if (name === "epoch") { addRow(data); schedule(); }
      else if (name === "status") showJob(data);
    }, poll);
  }

  // ------------------------------------------------------------------ the experiment page
  function experimentPage(section) {
    if (!section.dataset.events) return;
    const jobsTable = () => section.querySelector("#experiment-jobs");
    let refreshing = null;
    const refreshJobs = () => { // jobs the table does not have yet (the fan-out after the pre-train)
      refreshing ??= setTimeout(() => {
        refreshing = null;
        htmx.ajax("GET", location.pathname, { target: "#experiment-jobs", select: "#experiment-jobs", swap: "outerHTML" });
      }, 300);
    };
    follow(section.dataset.events, (name, data) => {
      if (name === "job") {
        const row = jobsTable()?.querySelector(`tr[data-job-id="${data.id}"]`);
        if (!row) { refreshJobs(); return; }
        showStatus(row, data.status);
        showProgress(row, data.progress);
        setField(row, "epoch", (el) => { el.textContent = data.current_epoch; });
        setField(row, "error", (el) => { el.textContent = data.error || ""; });
      } else if (name === "status") {
        showStatus(section.querySelector(".facts"), data.status);
        showProgress(section.querySelector(".facts"), data.progress);
        setField(section, "counts", (el) => {
          el.innerHTML = Object.entries(data.job_counts).filter(([, n]) => n)
            .map(([s, n]) => `<span class="status-${s}">${n} ${s}</span>`).join(" ");
        });
        setField(section.querySelector(".facts"), "error", (el) => { el.textContent = data.error || ""; });
        setField(section.querySelector(".facts"), "finished", (el) => { el.textContent = utc(data.finished_at); });
      } else if (name === "end") {
        section.querySelector('form[action$="/cancel"]')?.remove();
        swapIn(section.dataset.results, "#experiment-results");
      }
    }, () => setTimeout(() => location.reload(), 5000));
  }

  // ------------------------------------------------------------------ the compare page
  function comparePage(section) {
    const series = readJson("compare-data") || [];
    const runs = series.map((s) => ({ label: s.label, epochs: Epochs.fromCurves(s.curves) }));
    const charts = [...section.querySelectorAll(".chart[data-measure]")].map((el) => ({
      chart: makeChart(el, runs.map((r) => r.label)), measure: el.dataset.measure,
    }));
    const redraw = () => charts.forEach(({ chart, measure }) => {
      const xs = [...new Set(runs.flatMap((r) => r.epochs.columns([])[0]))].sort((a, b) => a - b);
      chart.set([xs].concat(runs.map((r) => {
        const [own, ys] = r.epochs.columns([measure]);
        const at = new Map(own.map((e, i) => [e, ys[i]]));
        return xs.map((e) => at.get(e) ?? null);
      })));
    });
    redraw();
    if (!section.dataset.live) return;
    section.dataset.jobs.split(",").forEach((id, i) => {
      const row = section.querySelector(`tr[data-job-id="${id}"]`);
      if (TERMINAL.has(row?.querySelector(".status")?.textContent)) return;
      follow(`${base}/ui/jobs/${id}/events`, (name, data) => {
        if (name === "epoch") { runs[i].epochs.put(data); redraw(); }
        else if (name === "status" && row) showStatus(row, data.status);
      });
    });
  }

  // ------------------------------------------------------------------ predict
  async function modelInput(file, size, channels) {
    // What /predict feeds the model, drawn here: over black, resized to size x size, grey if 1 channel.
    const canvas = document.createElement("canvas");
    canvas.width = canvas.height = size;
    canvas.className = "model-input";
    canvas.title = `${size}x${size}, ${channels === 1 ? "grey" : "RGB"} (rendered in the browser)`;
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, size, size);
    ctx.imageSmoothingQuality = "high";
    try {
      ctx.drawImage(await createImageBitmap(file), 0, 0, size, size);
    } catch (e) { return canvas; }
    if (channels === 1) { // PIL's convert("L"): ITU-R 601-2 luma
      const image = ctx.getImageData(0, 0, size, size), px = image.data;
      for (let i = 0; i < px.length; i += 4) {
        px[i] = px[i + 1] = px[i + 2] = Math.round(px[i] * 0.299 + px[i + 1] * 0.587 + px[i + 2] * 0.114);
      }
      ctx.putImageData(image, 0, 0);
    }
    return canvas;
  }

  function predictPanel(section) {
    const form = section.querySelector("#predict-form");
    const select = form.querySelector("select[name=checkpoint]");
    const files = form.querySelector("input[type=file]");
    const out = section.querySelector("#predictions");
    const canvas = section.querySelector("#draw");
    const ctx = canvas.getContext("2d");
    const clear = () => { ctx.fillStyle = "#000"; ctx.fillRect(0, 0, canvas.width, canvas.height); canvas.dataset.strokes = "0"; };
    clear();

    let drawing = false;
    const at = (e) => {
      const r = canvas.getBoundingClientRect();
      return [(e.clientX - r.left) * (canvas.width / r.width), (e.clientY - r.top) * (canvas.height / r.height)];
    };
    canvas.addEventListener("pointerdown", (e) => {
      drawing = true;
      canvas.setPointerCapture?.(e.pointerId);
      ctx.beginPath();
      ctx.moveTo(...at(e));
      canvas.dataset.strokes = String(Number(canvas.dataset.strokes) + 1);
    });
    canvas.addEventListener("pointermove", (e) => {
      if (!drawing) return;
      Object.assign(ctx, { strokeStyle: "#fff", lineWidth: 20, lineCap: "round", lineJoin: "round" });
      ctx.lineTo(...at(e));
      ctx.stroke();
    });
    const stop = () => { drawing = false; };
    canvas.addEventListener("pointerup", stop);
    canvas.addEventListener("pointerleave", stop);
    section.querySelector("#draw-clear").addEventListener("click", clear);

    async function predict(images) {
      const option = select.selectedOptions[0];
      const size = Number(option.dataset.size), channels = Number(option.dataset.channels);
      const body = new FormData();
      body.append("checkpoint", select.value);
      images.forEach((f) => body.append("files", f, f.name));
      out.innerHTML = '<p class="note">predicting&hellip;</p>';
      const response = await api(section.dataset.predictUrl, { method: "POST", body });
      const answer = await response.json().catch(() => ({ detail: response.statusText }));
      if (!response.ok) {
        const detail = Array.isArray(answer.detail) ? answer.detail.map((d) => d.msg).join("; ") : answer.detail;
        out.innerHTML = "";
        const p = document.createElement("p");
        p.className = "errors";
        p.setAttribute("role", "alert");
        p.textContent = `${response.status}: ${detail}`;
        out.appendChild(p);
        return;
      }
      const table = document.createElement("table");
      table.className = "list predictions";
      table.innerHTML = "<thead><tr><th>image</th><th>model input</th><th>label</th><th>top 3</th></tr></thead><tbody></tbody>";
      for (const [i, p] of answer.predictions.entries()) {
        const tr = document.createElement("tr");
        tr.className = "prediction";
        tr.dataset.label = p.label;
        tr.innerHTML = `<td></td><td></td><td class="label"></td><td class="top"></td>`;
        tr.children[0].textContent = p.filename;
        tr.children[1].appendChild(await modelInput(images[i], size, channels));
        tr.children[2].textContent = p.label;
        tr.children[3].innerHTML = p.top.map((t) =>
          `<div class="top-row"><span class="bar up" style="--size:${t.probability.toFixed(3)}"></span> <b></b> ${pct(t.probability)}</div>`).join("");
        tr.children[3].querySelectorAll("b").forEach((b, k) => { b.textContent = p.top[k].label; });
        table.tBodies[0].appendChild(tr);
      }
      out.innerHTML = "";
      out.appendChild(table);
    }

    form.addEventListener("submit", (e) => {
      e.preventDefault();
      if (!files.files.length) { out.innerHTML = '<p class="errors" role="alert">choose one or more images first</p>'; return; }
      predict([...files.files]);
    });
    section.querySelector("#predict-draw").addEventListener("click", () => {
      canvas.toBlob((blob) => predict([new File([blob], "drawing.png", { type: "image/png" })]), "image/png");
    });
  }

  // ------------------------------------------------------------------ forms
  function applyKind(form) { // the job form shows the fields of the chosen kind only
    const kind = form.querySelector("select[name=kind]")?.value;
    form.querySelectorAll("[data-section]").forEach((el) => {
      const section = el.dataset.section;
      el.hidden = (section === "pretrain" || section === "finetune") && section !== kind;
    });
  }

  document.addEventListener("change", (e) => {
    const form = e.target.closest?.("form");
    if (form?.matches("[data-kind-switch]") && e.target.name === "kind") applyKind(form);
    if (e.target.matches?.("[data-autosubmit]")) form?.submit();
  });
  document.addEventListener("htmx:after:settle", () => document.querySelectorAll("form[data-kind-switch]").forEach(applyKind));

  function start() {
    document.querySelectorAll("form[data-kind-switch]").forEach(applyKind);
    const job = document.getElementById("job");
    if (job) jobPage(job);
    const experiment = document.getElementById("experiment");
    if (experiment) experimentPage(experiment);
    const compare = document.getElementById("compare");
    if (compare) comparePage(compare);
    const predict = document.getElementById("predict");
    if (predict) predictPanel(predict);
    document.documentElement.dataset.ready = "yes"; // for the browser tests
  }
  window.transferlab = { lttbIndices, Epochs };
  start();
})();
