// Regenerates src/doors/mirror/registry/automap.json from the published npm package
// @huggingface/ollama-utils (MIT), the table the Hub uses to give a GGUF's chat template
// an Ollama template and parameters:
//
//   npm pack @huggingface/ollama-utils && tar xzf huggingface-ollama-utils-*.tgz
//   node scripts/ollama_automap.mjs package/dist/index.js > src/doors/mirror/registry/automap.json
//
// Only what the lookup needs is kept: the first 128 UTF-16 units of the GGUF template
// (the package compares `substring(0, 128)`), the special-token set, and the Ollama
// template and params.
import { readFileSync } from "node:fs";
import vm from "node:vm";

const source = readFileSync(process.argv[2], "utf8");
const start = source.indexOf("var OLLAMA_CHAT_TEMPLATE_MAPPING = [");
const end = source.indexOf("\n];", start);
if (start < 0 || end < 0) throw new Error("the table was not found in " + process.argv[2]);
const literal = source.slice(source.indexOf("[", start), end + 2);
const table = vm.runInNewContext("(" + literal + ")");
const pkg = JSON.parse(readFileSync(new URL("../package.json", "file://" + process.argv[2]), "utf8"));
const out = {
  source: `@huggingface/ollama-utils ${pkg.version} (MIT), chat-template-automap`,
  entries: table.map((e) => ({
    model: e.model,
    gguf_prefix: e.gguf.substring(0, 128),
    tokens: e.ollama.tokens,
    template: e.ollama.template,
    params: e.ollama.params ?? {},
  })),
};
process.stdout.write(JSON.stringify(out, null, 0).replace(/\},\{"model"/g, '},\n{"model"') + "\n");
