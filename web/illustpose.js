// illustpose's frontend extension (ComfyUI loads every .js of the pack's WEB_DIRECTORY).
//
// A node of the pack that reports text (Danbooru Tag's captions, the Pose Index nodes' summaries,
// results and info, the files the Save nodes wrote, the message of an image that could not be
// processed) shows that text on the node itself, in a read-only box under its widgets, as
// ComfyUI-WD14-Tagger shows its tags. The box is display only: it is left out of the saved
// workflow (widgets_values) and of the prompt sent to the server, and it is refreshed by each run.
import { app } from "../../scripts/app.js";
import { ComfyWidgets } from "../../scripts/widgets.js";

const PACK_SUFFIX = "|illustpose";
const TEXT_WIDGET = "illustpose_text";

function textWidget(node) {
  const found = node.widgets?.find((w) => w.name === TEXT_WIDGET);
  if (found) return found;
  const widget = ComfyWidgets.STRING(node, TEXT_WIDGET, ["STRING", { multiline: true }], app).widget;
  widget.serialize = false; // not stored in the workflow's widgets_values
  widget.options = { ...widget.options, serialize: false }; // not sent as an input of the prompt
  const element = widget.inputEl ?? widget.element;
  if (element) {
    element.readOnly = true;
    element.style.opacity = 0.8;
  }
  return widget;
}

function showText(node, lines) {
  const widget = textWidget(node);
  widget.value = lines.join("\n");
  const wanted = node.computeSize();
  node.setSize([Math.max(node.size[0], wanted[0]), Math.max(node.size[1], wanted[1])]);
  app.graph.setDirtyCanvas(true, true);
}

app.registerExtension({
  name: "illustpose.NodeText",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData.name?.endsWith(PACK_SUFFIX)) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      const result = onExecuted?.apply(this, arguments);
      if (Array.isArray(message?.text) && message.text.length) showText(this, message.text.map(String));
      return result;
    };
  },
});
