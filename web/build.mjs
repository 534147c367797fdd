// `make assets`: web/ -> sla_manager/static (committed, so neither CI nor a user needs npm).
// dashboard.js: our script with uPlot bundled in (esbuild, minified); dashboard.css: uPlot's
// stylesheet and ours; swagger/: Swagger UI's bundle and stylesheet for an offline /docs.
import { build } from "esbuild";
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { gzipSync } from "node:zlib";

const out = new URL("../sla_manager/static/", import.meta.url).pathname;
mkdirSync(`${out}swagger`, { recursive: true });

await build({
  entryPoints: ["src/dashboard.js"],
  bundle: true,
  minify: true,
  format: "iife",
  target: ["es2020"],
  legalComments: "eof",
  outfile: `${out}dashboard.js`,
});
const css = readFileSync("node_modules/uplot/dist/uPlot.min.css", "utf8") + "\n" + readFileSync("src/dashboard.css", "utf8");
const minCss = (await import("esbuild")).transformSync(css, { loader: "css", minify: true }).code;
writeFileSync(`${out}dashboard.css`, minCss);

const swagger = "node_modules/swagger-ui-dist/";
for (const f of ["swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png", "LICENSE"]) {
  copyFileSync(swagger + f, `${out}swagger/${f}`);
}
copyFileSync("node_modules/uplot/LICENSE", `${out}uPlot.LICENSE`);

for (const f of ["dashboard.js", "dashboard.css", "swagger/swagger-ui-bundle.js", "swagger/swagger-ui.css"]) {
  const raw = readFileSync(out + f);
  console.log(`${f}: ${raw.length} bytes, ${gzipSync(raw, { level: 9 }).length} gzipped`);
}
