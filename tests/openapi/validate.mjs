// Validates an OpenAPI document with @seriousme/openapi-schema-validator (pinned in
// package-lock.json; tests/integration/test_openapi.py installs it with `npm ci` and runs
// this). Prints one JSON line {"valid", "version", "errors"}; exits 0 when valid, 1 when not,
// 2 on a usage or read error.
//
//   node validate.mjs DOC.json
import { readFileSync } from "node:fs";
import { Validator } from "@seriousme/openapi-schema-validator";

const file = process.argv[2];
if (!file) {
    console.error("usage: node validate.mjs DOC.json");
    process.exit(2);
}
let doc;
try {
    doc = JSON.parse(readFileSync(file, "utf8"));
} catch (e) {
    console.error(`validate.mjs: cannot read ${file}: ${e.message}`);
    process.exit(2);
}
const validator = new Validator();
const res = await validator.validate(doc);
console.log(JSON.stringify({ valid: res.valid, version: validator.version, errors: res.errors ?? null }));
process.exit(res.valid ? 0 : 1);
