// Parse Mermaid diagrams with the real Mermaid parser and print what it understood.
//
// Reads a JSON array of diagram texts on stdin; prints a JSON array with, for each,
// {"ok": true, "type", "states", "relations", "classDefs"} or {"ok": false, "error"}.
// Mermaid expects a DOM (DOMPurify hooks in on import), so jsdom provides one.
import { JSDOM } from "jsdom";

const dom = new JSDOM("<!doctype html><html><body></body></html>");
globalThis.window = dom.window;
globalThis.document = dom.window.document;
const { default: mermaid } = await import("mermaid");
mermaid.initialize({ startOnLoad: false });

let input = "";
for await (const chunk of process.stdin) input += chunk;
const results = [];
for (const text of JSON.parse(input)) {
  try {
    const parsed = await mermaid.parse(text);
    const diagram = await mermaid.mermaidAPI.getDiagramFromText(text);
    const db = diagram.db;
    const result = { ok: true, type: parsed.diagramType, states: {}, relations: [], classDefs: {} };
    if (typeof db.getStates === "function") {
      for (const [id, state] of db.getStates()) {
        result.states[id] = { descriptions: state.descriptions, classes: state.classes };
      }
      result.relations = db.getRelations().map((r) => [r.id1, r.id2, r.relationTitle ?? ""]);
      for (const [id, cls] of db.getClasses()) result.classDefs[id] = cls.styles;
    }
    results.push(result);
  } catch (error) {
    results.push({ ok: false, error: String(error.message ?? error) });
  }
}
process.stdout.write(JSON.stringify(results));
