// "Add file": an externally recorded video or image added to the room's current study. The
// file is sent as it is (the request body is the file, streamed by the browser); the server
// checks size and type by content and registers it like a capture, so "Save" converts it.
import { h, scheduleRefresh, state, toast } from "./lib.js";

export function addFileButton() {
  const input = h("input", { type: "file", id: "add-file-input", hidden: true,
    accept: "video/*,.mkv,.ts,.h264,.264,.m2v,.mjpeg,image/jpeg,image/png,image/bmp",
    onchange: (e) => {
      const file = e.target.files[0];
      e.target.value = "";
      if (file) upload(file);
    } });
  return h("span", {}, input,
    h("button", { id: "add-file", title: "Add a video or image recorded elsewhere to this study", onclick: () => input.click() }, "Add file"));
}

// XMLHttpRequest rather than fetch: it reports upload progress, which a large video needs.
export function upload(file) {
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `/api/v1/rooms/${encodeURIComponent(state.room)}/upload?filename=${encodeURIComponent(file.name)}`);
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    if (state.csrf) xhr.setRequestHeader("X-CSRF-Token", state.csrf);
    let shown = -1;
    xhr.upload.onprogress = (e) => {
      const percent = e.lengthComputable ? Math.floor((100 * e.loaded) / e.total) : -1;
      if (percent !== shown && percent >= 0) { shown = percent; toast(`Uploading ${file.name}: ${percent} %`); }
    };
    xhr.onload = () => {
      let data = null;
      try { data = JSON.parse(xhr.responseText); } catch { data = null; }
      if (xhr.status === 201) {
        toast(`${file.name} added to the study as ${data.kind === "recording" ? "a video" : "an image"}; Save converts it`);
        scheduleRefresh();
      } else {
        toast(`${file.name} not added: ${data?.error?.message || `the server answered ${xhr.status}`}`, true);
      }
      resolve(xhr.status);
    };
    xhr.onerror = () => { toast(`${file.name} not added: the connection ended`, true); resolve(0); };
    xhr.send(file);
  });
}
