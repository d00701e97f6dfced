// MedLens web viewer: series list, NiiVue volume view with window/level presets, mask and heat-map
// overlays, feature table, HTML report and SR content. Bundled by esbuild (scripts/build_viewer.sh)
// into src/medlens/serve/viewer/static/viewer.js; the page loads nothing from outside the service.
import { Niivue, SLICE_TYPE } from "@niivue/niivue";

const $ = (sel) => document.querySelector(sel);
const state = {
  key: sessionStorage.getItem("medlens-key") || "",
  study: null,
  series: [],
  jobs: [],
  background: null, // series row shown as the volume
  mask: null, // {url, label}
  heat: null, // {url, label}
};

// Window/level presets: [label, center, width] in the image's units (HU for CT, SUVbw for PET).
const PRESETS = {
  CT: [
    ["Soft tissue", 40, 400],
    ["Lung", -600, 1500],
    ["Bone", 400, 1800],
  ],
  PT: [
    ["SUV 0-5", 2.5, 5],
    ["SUV 0-10", 5, 10],
    ["SUV 0-20", 10, 20],
  ],
  MR: [],
};

const nv = new Niivue({
  backColor: [0, 0, 0, 1],
  show3Dcrosshair: false,
  crosshairColor: [0.2, 0.8, 1, 0.35],
  crosshairWidth: 1,
  isColorbar: false,
  logLevel: "error",
});

function setStatus(text, isError = false) {
  const el = $("#status");
  el.textContent = text;
  el.className = isError ? "status error" : "status";
  document.body.dataset.status = isError ? "error" : text;
}

async function api(path, opts = {}) {
  const headers = { ...(opts.headers || {}), Authorization: `Bearer ${state.key}` };
  const r = await fetch(path, { ...opts, headers });
  if (!r.ok) {
    let detail = r.statusText;
    try {
      detail = (await r.json()).detail || detail;
    } catch (_e) {
      /* not JSON */
    }
    throw new Error(`${r.status}: ${detail}`);
  }
  return r;
}

const authHeaders = () => ({ Authorization: `Bearer ${state.key}` });

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "onclick" || k === "onchange") e[k] = v;
    else if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

// ---------------------------------------------------------------- volumes
async function showVolumes() {
  const bg = state.background;
  if (!bg) return;
  const list = [
    {
      url: `/series/${bg.series_uid}/volume.nii.gz`,
      name: `${bg.series_uid}.nii.gz`,
      headers: authHeaders(),
      colormap: "gray",
    },
  ];
  if (state.heat) {
    list.push({
      url: state.heat.url,
      name: "heat.nii.gz",
      headers: authHeaders(),
      colormap: "warm",
      opacity: 0.45,
    });
  }
  if (state.mask) {
    list.push({
      url: state.mask.url,
      name: "mask.nii.gz",
      headers: authHeaders(),
      colormap: "red",
      opacity: 0.6,
      cal_min: 0.5,
      cal_max: 1,
    });
  }
  setStatus(`loading ${bg.modality} ${bg.series_description || bg.series_uid}`);
  await nv.loadVolumes(list);
  if (state.heat) {
    const h = nv.volumes[1];
    // Show uptake above 20% of the robust maximum only, so the grey image stays readable.
    h.cal_min = h.robust_max * 0.2;
    h.cal_max = h.robust_max;
  }
  nv.updateGLVolume();
  showPresets(bg.modality);
  // CT opens in the soft-tissue window; PET and MR in NiiVue's robust range of the volume.
  if (bg.modality === "CT") setWindow(40, 400);
  const v = nv.volumes[0];
  $("#wl-center").value = ((v.cal_min + v.cal_max) / 2).toFixed(1);
  $("#wl-width").value = (v.cal_max - v.cal_min).toFixed(1);
  document.body.dataset.volumes = String(nv.volumes.length);
  setStatus(`showing ${bg.modality} ${bg.series_description || ""} (${nv.volumes.length} layer(s))`);
}

function setWindow(center, width) {
  const v = nv.volumes[0];
  if (!v) return;
  v.cal_min = center - width / 2;
  v.cal_max = center + width / 2;
  nv.updateGLVolume();
  $("#wl-center").value = center;
  $("#wl-width").value = width;
  document.body.dataset.window = `${center}/${width}`;
}

function showPresets(modality) {
  const box = $("#presets");
  box.replaceChildren();
  for (const [label, c, w] of PRESETS[modality] || []) {
    box.append(el("button", { "data-preset": label, onclick: () => setWindow(c, w) }, label));
  }
  box.append(
    el(
      "button",
      {
        "data-preset": "auto",
        onclick: () => {
          const v = nv.volumes[0];
          setWindow((v.robust_min + v.robust_max) / 2, v.robust_max - v.robust_min);
        },
      },
      "Auto",
    ),
  );
}

// ---------------------------------------------------------------- study, series, jobs
async function loadStudies() {
  const studies = await (await api("/studies")).json();
  const sel = $("#study");
  sel.replaceChildren(el("option", { value: "" }, "— study —"));
  for (const s of studies) {
    sel.append(el("option", { value: s.study_uid }, `${s.patient_id} ${s.study_date || ""} ${s.study_description || ""}`));
  }
  const wanted = new URLSearchParams(location.search).get("study");
  if (wanted) sel.value = wanted;
  else if (studies.length === 1) sel.value = studies[0].study_uid;
  if (sel.value) await openStudy(sel.value);
  else setStatus(`${studies.length} studies`);
}

async function openStudy(uid) {
  state.study = uid;
  state.mask = null;
  state.heat = null;
  state.series = await (await api(`/studies/${uid}/series`)).json();
  state.jobs = await (await api(`/jobs?study_uid=${encodeURIComponent(uid)}`)).json();
  renderSeries();
  renderOverlays();
  await renderResults();
  const images = state.series.filter((s) => !["RTSTRUCT", "SEG", "SR"].includes(s.modality));
  const first = images.find((s) => s.modality === "PT") || images[0];
  if (first) {
    state.background = first;
    await showVolumes();
  }
}

function renderSeries() {
  const ul = $("#series");
  ul.replaceChildren();
  for (const s of state.series) {
    const isImage = !["RTSTRUCT", "SEG", "SR"].includes(s.modality);
    const li = el(
      "li",
      { "data-series": s.series_uid, "data-modality": s.modality, class: isImage ? "image" : "object" },
      `${s.modality} · ${s.series_description || s.series_uid} · ${s.n_instances} inst.`,
    );
    if (isImage) {
      li.onclick = async () => {
        state.background = s;
        state.mask = null;
        renderOverlays();
        await showVolumes();
      };
    }
    ul.append(li);
  }
}

function maskChoices() {
  const out = [];
  for (const s of state.series) {
    if (!["RTSTRUCT", "SEG"].includes(s.modality)) continue;
    for (const roi of s.rois || []) {
      out.push({
        label: `${s.modality} ${roi}`,
        ref: s.referenced_series_uid,
        url: `/series/${s.series_uid}/mask.nii.gz?roi=${encodeURIComponent(roi)}`,
      });
    }
  }
  for (const j of state.jobs) {
    if (j.kind === "segment" && j.state === "done" && j.results.includes("mask.nii.gz")) {
      out.push({ label: `job ${j.id} (${j.params.method || "segment"})`, ref: null, url: `/jobs/${j.id}/results/mask.nii.gz` });
    }
  }
  return out;
}

function renderOverlays() {
  const bg = state.background;
  const msel = $("#mask");
  msel.replaceChildren(el("option", { value: "" }, "— no mask —"));
  maskChoices().forEach((m, i) => {
    // Masks are rasterised on their own image series' grid; NiiVue places them by their affine.
    const url = bg && m.ref && m.ref !== bg.series_uid ? `${m.url}&reference=${bg.series_uid}` : m.url;
    msel.append(el("option", { value: String(i), "data-url": url }, m.label));
  });
  const hsel = $("#heat");
  hsel.replaceChildren(el("option", { value: "" }, "— no heat map —"));
  for (const s of state.series) {
    if (["RTSTRUCT", "SEG", "SR"].includes(s.modality) || (bg && s.series_uid === bg.series_uid)) continue;
    hsel.append(
      el("option", { value: s.series_uid, "data-url": `/series/${s.series_uid}/volume.nii.gz` }, `${s.modality} ${s.series_description || ""}`),
    );
  }
  for (const j of state.jobs) {
    // A segment job's Grad-CAM lies on its image series' grid; NiiVue places it by its affine.
    if (j.kind === "segment" && j.state === "done" && j.results.includes("gradcam.nii.gz")) {
      hsel.append(el("option", { value: `job-${j.id}`, "data-url": `/jobs/${j.id}/results/gradcam.nii.gz` }, `Grad-CAM (job ${j.id})`));
    }
  }
}

async function renderResults() {
  const feats = state.jobs.find((j) => j.kind === "features" && j.state === "done");
  const table = $("#features");
  table.replaceChildren();
  if (feats) {
    const doc = await (await api(`/jobs/${feats.id}/results/features.json`)).json();
    const rois = Object.keys(doc.features);
    table.append(el("caption", {}, `${doc.modality} · preset ${doc.preset} · job ${feats.id}`));
    table.append(el("tr", {}, el("th", {}, "feature"), ...rois.map((r) => el("th", {}, r))));
    const tags = Object.keys(doc.features[rois[0]] || {});
    for (const t of tags) {
      table.append(
        el(
          "tr",
          {},
          el("td", {}, t),
          ...rois.map((r) => {
            const v = doc.features[r][t];
            return el("td", { class: "num" }, v === null ? "NaN" : Number(v).toPrecision(5));
          }),
        ),
      );
    }
  } else {
    table.append(el("caption", {}, "no features yet: run a features job"));
  }
  const rep = state.jobs.find((j) => j.kind === "report" && j.state === "done");
  const frame = $("#report");
  const sr = $("#sr");
  sr.replaceChildren();
  if (rep) {
    const html = rep.results.find((n) => n.endsWith(".html"));
    // srcdoc + an empty sandbox: the report's HTML is shown, never run.
    frame.srcdoc = html ? await (await api(`/jobs/${rep.id}/results/${html}`)).text() : "<p>no HTML report</p>";
    const srFile = rep.results.find((n) => n.endsWith(".dcm") && n.toLowerCase().includes("sr"));
    if (srFile) {
      const tree = await (await api(`/jobs/${rep.id}/results/${srFile}/content`)).json();
      sr.append(renderSr(tree));
    } else sr.textContent = "no SR in this report job";
  } else {
    frame.srcdoc = "<p style='font-family:sans-serif'>no report yet: run a report job</p>";
    sr.textContent = "no SR yet";
  }
  renderJobs();
}

function renderSr(node) {
  const shown = typeof node.value === "number" ? Number(node.value.toPrecision(4)) : node.value;
  const value = shown === undefined || shown === null ? "" : ` = ${shown}${node.unit ? " " + node.unit : ""}`;
  const li = el("li", { "data-vt": node.value_type || "" }, `${node.concept || "(container)"}${value}`);
  if (node.children && node.children.length) {
    const ul = el("ul");
    for (const c of node.children) ul.append(renderSr(c));
    li.append(ul);
  }
  return el("ul", { class: "sr-tree" }, li);
}

function renderJobs() {
  const ul = $("#jobs");
  ul.replaceChildren();
  for (const j of state.jobs) {
    const li = el(
      "li",
      { "data-job": j.id, "data-state": j.state },
      `${j.kind} · ${j.state} · ${Math.round(j.progress * 100)}% · ${j.message}`,
    );
    if (j.state === "queued" || j.state === "running") {
      li.append(el("button", { onclick: () => api(`/jobs/${j.id}`, { method: "DELETE" }).then(refreshJobs) }, "cancel"));
    }
    ul.append(li);
  }
}

async function refreshJobs() {
  if (!state.study) return;
  state.jobs = await (await api(`/jobs?study_uid=${encodeURIComponent(state.study)}`)).json();
  renderJobs();
  return state.jobs;
}

async function submitJob(kind) {
  const params = {};
  if (state.background && kind === "segment") params.series_uid = state.background.series_uid;
  const r = await api("/jobs", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ kind, study_uid: state.study, params }),
  });
  const job = await r.json();
  setStatus(`job ${job.id} (${kind}) submitted`);
  const poll = async () => {
    const jobs = await refreshJobs();
    const j = jobs.find((x) => x.id === job.id);
    if (j && (j.state === "queued" || j.state === "running")) setTimeout(poll, 1000);
    else {
      setStatus(`job ${job.id} ${j ? j.state : "gone"}${j && j.state === "failed" ? ": " + j.message : ""}`, j && j.state === "failed");
      renderOverlays();
      await renderResults();
    }
  };
  setTimeout(poll, 500);
}

// ---------------------------------------------------------------- wiring
function guard(fn) {
  return async (...args) => {
    try {
      await fn(...args);
    } catch (e) {
      setStatus(String(e.message || e), true);
    }
  };
}

async function main() {
  await nv.attachToCanvas($("#gl"));
  nv.setSliceType(SLICE_TYPE.MULTIPLANAR);
  $("#key").value = state.key;
  $("#connect").onclick = guard(async () => {
    state.key = $("#key").value.trim();
    sessionStorage.setItem("medlens-key", state.key);
    await loadStudies();
  });
  $("#study").onchange = guard(async (e) => e.target.value && openStudy(e.target.value));
  $("#mask").onchange = guard(async (e) => {
    const opt = e.target.selectedOptions[0];
    state.mask = e.target.value ? { url: opt.dataset.url, label: opt.textContent } : null;
    await showVolumes();
  });
  $("#heat").onchange = guard(async (e) => {
    const opt = e.target.selectedOptions[0];
    state.heat = e.target.value ? { url: opt.dataset.url, label: opt.textContent } : null;
    await showVolumes();
  });
  $("#wl-apply").onclick = () => setWindow(Number($("#wl-center").value), Number($("#wl-width").value));
  for (const b of document.querySelectorAll("[data-job-kind]")) b.onclick = guard(() => submitJob(b.dataset.jobKind));
  for (const b of document.querySelectorAll("[data-view]")) {
    b.onclick = () => nv.setSliceType(SLICE_TYPE[b.dataset.view]);
  }
  if (state.key) await guard(loadStudies)();
  else setStatus("enter an API key and press Connect");
  window.medlensViewer = { nv, state, setWindow, showVolumes, openStudy };
}

main();
