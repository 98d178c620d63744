// Validate a .glb/.gltf with the Khronos glTF validator (npm gltf-validator); prints the JSON report.
// usage: node tools/gltf_validate.js FILE [NODE_MODULES_DIR]   (default: .ci/node/node_modules)
const fs = require("fs");
const path = require("path");
const file = process.argv[2];
const modules = process.argv[3] || path.join(__dirname, "..", ".ci", "node", "node_modules");
const validator = require(path.join(modules, "gltf-validator"));
validator
  .validateBytes(new Uint8Array(fs.readFileSync(file)), { maxIssues: 100, externalResourceFunction: () => Promise.reject("no external resources") })
  .then((report) => { console.log(JSON.stringify(report)); })
  .catch((error) => { console.error(String(error)); process.exit(2); });
