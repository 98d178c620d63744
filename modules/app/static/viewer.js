// The 3D view: the GLB mesh (or the splat centres) seen from the capture point first, orbit / zoom with the mouse.
// Mesh and splats are in glTF axes (Y up, the panorama's centre column along -Z) once loaded; the camera starts at the
// origin, where the panorama was taken, looking at the centre column.
import * as THREE from 'three';
import { GLTFLoader } from 'three/addons/loaders/GLTFLoader.js';
import { PLYLoader } from 'three/addons/loaders/PLYLoader.js';
import { OrbitControls } from 'three/addons/controls/OrbitControls.js';

const SH_C0 = 0.28209479177387814;  // degree-0 spherical harmonic: colour = 0.5 + SH_C0 * f_dc

export class Viewer {
  constructor(container, status) {
    this.container = container;
    this.status = status;
    // preserveDrawingBuffer: the canvas can be read back (saved screenshots, the browser test)
    this.renderer = new THREE.WebGLRenderer({ antialias: true, preserveDrawingBuffer: true });
    this.renderer.setPixelRatio(Math.min(window.devicePixelRatio || 1, 2));
    this.renderer.outputColorSpace = THREE.SRGBColorSpace;
    container.appendChild(this.renderer.domElement);
    this.scene = new THREE.Scene();
    this.scene.background = new THREE.Color(0x10131a);
    this.camera = new THREE.PerspectiveCamera(75, 1, 0.01, 2000);
    this.controls = new OrbitControls(this.camera, this.renderer.domElement);
    this.controls.enableDamping = false;
    this.controls.addEventListener('change', () => this.render());
    this.content = null;   // the object shown (mesh scene or points)
    this.box = new THREE.Box3();
    this.state = { loaded: false, mode: null, url: null, vertices: 0, triangles: 0, points: 0, error: null };
    window.viewerState = this.state;
    new ResizeObserver(() => this.resize()).observe(container);
    this.resize();
  }

  resize() {
    const w = Math.max(1, this.container.clientWidth), h = Math.max(1, this.container.clientHeight);
    this.renderer.setSize(w, h);
    this.camera.aspect = w / h;
    this.camera.updateProjectionMatrix();
    this.render();
  }

  render() { this.renderer.render(this.scene, this.camera); }

  clear() {
    if (this.content) {
      this.scene.remove(this.content);
      this.content.traverse((o) => {
        if (o.geometry) o.geometry.dispose();
        if (o.material) [].concat(o.material).forEach((m) => { if (m.map) m.map.dispose(); m.dispose(); });
      });
    }
    this.content = null;
    Object.assign(this.state, { loaded: false, mode: null, url: null, vertices: 0, triangles: 0, points: 0, error: null });
    this.render();
  }

  _show(object, mode, url) {
    this.clear();
    this.content = object;
    this.scene.add(object);
    this.box.setFromObject(object);
    let vertices = 0, triangles = 0, points = 0;
    object.traverse((o) => {
      if (o.isMesh) {
        vertices += o.geometry.attributes.position.count;
        triangles += (o.geometry.index ? o.geometry.index.count : o.geometry.attributes.position.count) / 3;
      } else if (o.isPoints) points += o.geometry.attributes.position.count;
    });
    Object.assign(this.state, { loaded: true, mode, url, vertices, triangles, points });
    this.fromCapturePoint();
    this.setStatus(mode === 'mesh' ? `${triangles.toLocaleString()} triangles` : `${points.toLocaleString()} splat centres`);
  }

  setStatus(text) { if (this.status) this.status.textContent = text; }

  async loadMesh(url) {
    this.setStatus('loading the mesh ...');
    try {
      const gltf = await new GLTFLoader().loadAsync(url);
      this._show(gltf.scene, 'mesh', url);
    } catch (err) {
      this.state.error = String(err);
      this.setStatus(`could not load the mesh: ${err}`);
    }
  }

  // Splat centres as points coloured by their degree-0 colour (a preview: open splats.ply in a Gaussian-splat
  // viewer for the full rendering).
  async loadSplats(url, axes) {
    this.setStatus('loading the splats ...');
    try {
      const loader = new PLYLoader();
      loader.setCustomPropertyNameMapping({ f_dc: ['f_dc_0', 'f_dc_1', 'f_dc_2'], opacity: ['opacity'],
                                            scale: ['scale_0', 'scale_1', 'scale_2'] });
      const geometry = await loader.loadAsync(url);
      const dc = geometry.getAttribute('f_dc');
      const n = geometry.attributes.position.count;
      // point size: twice the median splat radius (3DGS stores log scales), in scene units
      const radii = new Float32Array(n);
      const sc = geometry.getAttribute('scale');
      for (let i = 0; i < n; i++) radii[i] = Math.exp(Math.max(sc.getX(i), sc.getY(i), sc.getZ(i)));
      radii.sort();
      const size = n ? 2 * radii[n >> 1] : 0.01;
      const colours = new Float32Array(n * 3);
      const c = new THREE.Color();
      for (let i = 0; i < n; i++) {
        const r = Math.min(1, Math.max(0, 0.5 + SH_C0 * dc.getX(i)));
        const g = Math.min(1, Math.max(0, 0.5 + SH_C0 * dc.getY(i)));
        const b = Math.min(1, Math.max(0, 0.5 + SH_C0 * dc.getZ(i)));
        c.setRGB(r, g, b, THREE.SRGBColorSpace);
        colours[3 * i] = c.r; colours[3 * i + 1] = c.g; colours[3 * i + 2] = c.b;
      }
      geometry.setAttribute('color', new THREE.BufferAttribute(colours, 3));
      geometry.deleteAttribute('f_dc');
      geometry.deleteAttribute('opacity');
      geometry.deleteAttribute('scale');
      const points = new THREE.Points(geometry, new THREE.PointsMaterial({ size, sizeAttenuation: true, vertexColors: true }));
      // OpenCV axes (x right, y down, z forward) -> glTF axes (y up, forward = -z): half a turn about x
      if (axes === 'opencv') points.rotation.x = Math.PI;
      const group = new THREE.Group();
      group.add(points);
      this._show(group, 'splats', url);
    } catch (err) {
      this.state.error = String(err);
      this.setStatus(`could not load the splats: ${err}`);
    }
  }

  // At the capture point (the origin), looking at the panorama's centre column (-Z); dragging turns the view.
  fromCapturePoint() {
    this.camera.position.set(0, 0, 0.01);
    this.controls.target.set(0, 0, 0);
    this.controls.rotateSpeed = -0.35;   // drag the scene, as in a panorama viewer
    this.controls.minDistance = 0.001;
    this.controls.maxDistance = 1000;
    this.controls.update();
    this.render();
  }

  // Above and behind the scene, looking at its centre.
  fromOutside() {
    const size = this.box.isEmpty() ? 5 : this.box.getSize(new THREE.Vector3()).length();
    const centre = this.box.isEmpty() ? new THREE.Vector3() : this.box.getCenter(new THREE.Vector3());
    this.controls.target.copy(centre);
    this.camera.position.copy(centre).add(new THREE.Vector3(0, 0.45 * size, 0.5 * size));
    this.controls.rotateSpeed = 1.0;
    this.controls.update();
    this.render();
  }
}
