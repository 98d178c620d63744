"""Render mesh files the way Blender shows them after import (Cycles on the CPU), for README pictures.

Run with a Python that has bpy (``pip install bpy`` in its own virtual environment):

    python tools/render_in_blender.py OUT.png FILE [--eye X Y Z] [--look X Y Z] [--fov DEG] [--size W H]

FILE is imported with Blender's own importer (FBX, glTF/GLB, OBJ, PLY) and default options; the camera sits at
``--eye`` looking at ``--look`` (Blender's Z-up world: the capture point is the origin, the floor below it);
``--engine workbench`` (default) renders what the solid viewport shows with texture colours and flat lighting;
``cycles`` path-traces the imported materials lit by a point light at the capture point.
"""

import argparse
import math
import sys

import bpy
from mathutils import Vector


def main() -> int:
    argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else sys.argv[1:]
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("file")
    p.add_argument("--eye", type=float, nargs=3, default=[0.0, -0.6, 0.3])
    p.add_argument("--look", type=float, nargs=3, default=[0.0, 2.0, -0.3])
    p.add_argument("--fov", type=float, default=100.0)
    p.add_argument("--size", type=int, nargs=2, default=[960, 540])
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--engine", choices=["workbench", "cycles"], default="workbench",
                   help="workbench: Blender's solid viewport with texture colours (flat studio light); cycles: path "
                        "tracing lit by a point light at the capture point")
    a = p.parse_args(argv)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    ext = a.file.rsplit(".", 1)[1].lower()
    {"fbx": bpy.ops.import_scene.fbx, "glb": bpy.ops.import_scene.gltf, "gltf": bpy.ops.import_scene.gltf,
     "obj": bpy.ops.wm.obj_import, "ply": bpy.ops.wm.ply_import}[ext](filepath=a.file)
    scene = bpy.context.scene
    for o in list(scene.objects):
        if o.type == "CAMERA":  # the file's own camera (GLB) is not the one we render from
            bpy.data.objects.remove(o)
    cam_data = bpy.data.cameras.new("render_camera")
    cam_data.angle = math.radians(a.fov)
    cam_data.clip_start = 0.01
    cam = bpy.data.objects.new("render_camera", cam_data)
    scene.collection.objects.link(cam)
    cam.location = Vector(a.eye)
    cam.rotation_euler = (Vector(a.look) - Vector(a.eye)).to_track_quat("-Z", "Y").to_euler()
    scene.camera = cam
    if a.engine == "workbench":
        scene.render.engine = "BLENDER_WORKBENCH"
        scene.display.shading.light = "FLAT"
        scene.display.shading.color_type = "TEXTURE"
    else:
        light = bpy.data.lights.new("capture_point", type="POINT")
        light.energy = 400.0
        light.shadow_soft_size = 0.05
        lamp = bpy.data.objects.new("capture_point", light)
        scene.collection.objects.link(lamp)
        scene.render.engine = "CYCLES"
        scene.cycles.device = "CPU"
        scene.cycles.samples = a.samples
        scene.cycles.use_denoising = True
    scene.render.resolution_x, scene.render.resolution_y = a.size
    scene.render.resolution_percentage = 100
    scene.view_settings.view_transform = "Standard"  # show texture colours as they are
    scene.render.filepath = a.out
    bpy.ops.render.render(write_still=True)
    print("wrote", a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
