// The page: form -> POST /api/jobs; the session's jobs polled from /api/jobs; results of the selected job shown.
import { Viewer } from '/static/viewer.js';

const $ = (id) => document.getElementById(id);
let info = null;
let viewer = null;
let selected = null;        // id of the job whose results are shown
let shownResult = null;     // id of the job whose results are on the page
const jobs = new Map();     // id -> last status

function option(select, value, label) {
  const o = document.createElement('option');
  o.value = value; o.textContent = label || value;
  select.appendChild(o);
}

function showError(message) {
  const box = $('error');
  box.textContent = message || '';
  box.hidden = !message;
}

const JOINT = ['joint', 'joint_metric'];
function weightsFor(predictor) {
  const need = [];
  if (JOINT.includes(predictor) || predictor === 'midas_v31') need.push(['midas_v31', $('midas_variant').value]);
  if (JOINT.includes(predictor) || predictor === 'depth_anything_v2') need.push(['depth_anything_v2', $('depth_anything_variant').value]);
  if (predictor === 'depth_pro') need.push(['depth_pro', 'default']);
  return need.map(([p, v]) => info.weights[p][v]).filter((w) => !w.available);
}

function updateForm() {
  const p = $('predictor').value;
  $('midas-label').hidden = !(JOINT.includes(p) || p === 'midas_v31');
  $('dav2-label').hidden = !(JOINT.includes(p) || p === 'depth_anything_v2');
  $('gt-label').hidden = p !== 'synthetic';
  const banner = $('weights-banner');
  const missing = p === 'synthetic' || info.allow_download ? [] : weightsFor(p);
  banner.hidden = missing.length === 0;
  banner.innerHTML = '';
  if (missing.length) {
    const head = document.createElement('div');
    head.textContent = 'Model weights missing on this machine for the selected predictor. Get them (on a machine with internet access, then copy pre_checkpoints/ here) with:';
    banner.appendChild(head);
    for (const w of missing) {
      const line = document.createElement('div');
      const code = document.createElement('code');
      code.textContent = w.command;
      line.append(`${w.family} (licence ${w.licence}): `, code);
      banner.appendChild(line);
    }
    const demo = document.createElement('div');
    demo.append('Meanwhile, the ');
    const b = document.createElement('button');
    b.type = 'button'; b.id = 'try-demo'; b.textContent = 'synthetic room demo';
    b.onclick = () => { $('example').value = 'synthetic_room'; $('predictor').value = 'synthetic'; updateForm(); };
    demo.append(b, ' runs without weights (ground-truth-backed: the true distances, corrupted per face, stitched by the pipeline).');
    banner.appendChild(demo);
  }
  const ex = info.examples.find((e) => e.name === $('example').value);
  $('demo-note').hidden = !(ex && ex.predictor === 'synthetic');
  $('demo-note').textContent = ex && ex.predictor === 'synthetic' ? info.synthetic_label : '';
}

async function loadInfo() {
  info = await (await fetch('/api/info')).json();
  const c = info.choices, d = info.defaults;
  for (const name of ['predictor', 'midas_variant', 'depth_anything_variant', 'scale_method', 'alignment', 'refinement']) {
    for (const v of c[name]) {
      let label = v;
      if (name === 'midas_variant') label = `${v} (${info.weights.midas_v31[v].available ? 'weights here' : 'no weights'})`;
      if (name === 'depth_anything_variant') label = `${v} (${info.weights.depth_anything_v2[v].licence}, ${info.weights.depth_anything_v2[v].available ? 'weights here' : 'no weights'})`;
      if (name === 'predictor' && v === 'synthetic') label = 'synthetic (ground-truth demo)';
      if (name === 'predictor' && v === 'joint_metric') label = 'joint_metric (joint + a metric network for the scale)';
      if (name === 'predictor' && v === 'depth_pro') label = `depth_pro (${info.weights.depth_pro.default.licence}, ${info.weights.depth_pro.default.available ? 'weights here' : 'no weights'})`;
      option($(name), v, label);
    }
    $(name).value = d[name];
  }
  for (const e of info.examples) option($('example'), e.name, e.label);
  for (const f of c.formats) {
    const l = document.createElement('label');
    l.className = 'inline';
    const i = document.createElement('input');
    i.type = 'checkbox'; i.name = 'formats'; i.value = f; i.checked = d.formats.includes(f) || f === 'glb';
    if (f === 'glb') { i.disabled = true; i.title = 'the 3D view needs the GLB'; }
    l.append(i, ` ${f.toUpperCase()}`);
    $('formats').appendChild(l);
  }
  $('face_size').value = d.face_size;
  $('camera_height').value = d.camera_height ?? '';
  $('mesh_stride').value = d.mesh_stride;
  $('decimate_faces').value = d.decimate_faces ?? '';
  $('close_poles').checked = d.close_poles;
  $('splats').checked = d.splats;
  $('splat_stride').value = d.splat_stride;
  const l = info.limits;
  $('limits').textContent = `At most ${l.max_upload_mb} MB and ${l.max_megapixels} megapixels per upload; ` +
    `${l.concurrency} job(s) run at a time, the rest wait in line; files are deleted ${Math.round(l.session_ttl_s / 60)} min after your last visit.`;
  for (const id of ['predictor', 'midas_variant', 'depth_anything_variant', 'example']) $(id).addEventListener('change', () => {
    if (id === 'example') {
      const ex = info.examples.find((e) => e.name === $('example').value);
      if (ex && ex.predictor) $('predictor').value = ex.predictor;
    }
    updateForm();
  });
  updateForm();
}

async function submit(ev) {
  ev.preventDefault();
  showError('');
  const fd = new FormData();
  const pano = $('panorama').files[0];
  const gt = $('ground_truth').files[0];
  const limit = info.limits.max_upload_mb * 1024 * 1024;
  const total = (pano ? pano.size : 0) + (gt ? gt.size : 0);
  if (total > limit) {
    showError(`${pano ? pano.name : 'the upload'}: ${(total / 2 ** 20).toFixed(1)} MB is more than this server accepts (${info.limits.max_upload_mb} MB).`);
    return;
  }
  if (pano) fd.append('panorama', pano, pano.name);
  else if ($('example').value) fd.append('example', $('example').value);
  if (gt && $('predictor').value === 'synthetic') fd.append('ground_truth', gt, gt.name);
  for (const name of ['predictor', 'midas_variant', 'depth_anything_variant', 'scale_method', 'alignment', 'refinement',
                      'face_size', 'camera_height', 'mesh_stride', 'decimate_faces', 'splat_stride']) fd.append(name, $(name).value);
  fd.append('close_poles', $('close_poles').checked ? 'true' : 'false');
  fd.append('splats', $('splats').checked ? 'true' : 'false');
  const formats = [...document.querySelectorAll('input[name=formats]')].filter((i) => i.checked).map((i) => i.value);
  fd.append('formats', formats.join(','));
  $('run').disabled = true;
  try {
    const r = await fetch('/api/jobs', { method: 'POST', body: fd });
    const body = await r.json().catch(() => ({ error: `the server answered ${r.status}` }));
    if (!r.ok) { showError(body.error || `the server answered ${r.status}`); return; }
    jobs.set(body.job.id, body.job);
    selected = body.job.id;
    $('panorama').value = '';
    renderJobs();
    poll();
  } catch (err) {
    showError(`the upload did not reach the server (${err}); is it larger than ${info.limits.max_upload_mb} MB?`);
  } finally {
    $('run').disabled = false;
  }
}

function describe(job) {
  if (job.state === 'queued') return `queued: ${job.position} job(s) ahead`;
  if (job.state === 'running') return `running: ${job.stage_label}`;
  if (job.state === 'failed') return `failed: ${job.error}`;
  const t = job.finished && job.started ? ` in ${(job.finished - job.started).toFixed(1)} s` : '';
  return `done${t}`;
}

function renderJobs() {
  const list = $('jobs');
  list.innerHTML = '';
  for (const job of jobs.values()) {
    const li = document.createElement('li');
    li.dataset.job = job.id;
    li.dataset.state = job.state;
    li.className = `${job.state}${job.id === selected ? ' selected' : ''}`;
    const name = document.createElement('div');
    name.textContent = `${job.image_name} - ${job.options.predictor}`;
    const state = document.createElement('div');
    state.className = 'state';
    state.textContent = describe(job);
    const bar = document.createElement('progress');
    bar.max = 1; bar.value = job.fraction;
    li.append(name, state, bar);
    li.onclick = () => { selected = job.id; renderJobs(); showResult(); };
    list.appendChild(li);
  }
}

function showResult() {
  const job = jobs.get(selected);
  if (!job || job.state !== 'done' || shownResult === job.id) return;
  shownResult = job.id;
  $('result').hidden = false;
  $('result-title').textContent = `${job.image_name} - ${job.options.predictor}`;
  $('result-label').textContent = job.label || '';
  $('result-label').className = job.label ? 'note label-synthetic' : 'note';
  $('img-panorama').src = job.views.panorama;
  $('img-distance').src = job.views.distance || '';
  $('img-confidence').src = job.views.confidence || '';
  const ul = $('downloads');
  ul.innerHTML = '';
  const add = (url, name, size, text) => {
    const li = document.createElement('li');
    const a = document.createElement('a');
    a.href = url; a.download = name; a.textContent = text || name;
    li.append(a, size != null ? ` (${(size / 1024).toFixed(0)} kB)` : '');
    ul.appendChild(li);
    return a;
  };
  if (job.zip_url) add(job.zip_url, '', null, 'all files (zip)').id = 'download-zip';
  for (const f of job.files) add(f.url, f.name, f.size);
  if (!viewer) viewer = new Viewer($('viewer'), $('viewer-status'));
  $('show-splats').disabled = !(job.viewer && job.viewer.splats);
  if (job.viewer) viewer.loadMesh(job.viewer.glb);
}

let polling = false;
async function poll() {
  if (polling) return;
  polling = true;
  try {
    for (;;) {
      const r = await fetch('/api/jobs');
      if (r.ok) {
        const body = await r.json();
        for (const j of body.jobs) jobs.set(j.id, j);
        renderJobs();
        showResult();
      }
      if (![...jobs.values()].some((j) => j.state === 'queued' || j.state === 'running')) break;
      await new Promise((res) => setTimeout(res, 400));
    }
  } finally {
    polling = false;
  }
}

$('job-form').addEventListener('submit', submit);
$('show-mesh').onclick = () => { const j = jobs.get(shownResult); if (j && j.viewer) viewer.loadMesh(j.viewer.glb); };
$('show-splats').onclick = () => { const j = jobs.get(shownResult); if (j && j.viewer && j.viewer.splats) viewer.loadSplats(j.viewer.splats, j.viewer.splat_axes); };
$('view-capture').onclick = () => viewer && viewer.fromCapturePoint();
$('view-outside').onclick = () => viewer && viewer.fromOutside();
await loadInfo();
await poll();  // jobs of this session from before a reload
window.appReady = true;
