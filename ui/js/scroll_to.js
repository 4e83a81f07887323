// Scrolls the element with the class data.target into view, once per address (a search hit opened in History
// starts at its turn, and a later rerun of the same page leaves the reader where they are).
export default function (component) {
  const data = component.data || {};
  const target = data.target && document.querySelector(`.${data.target}`);
  if (!target || window.__talkScrolledTo === location.href) return;
  window.__talkScrolledTo = location.href;
  target.scrollIntoView({ block: "start" });
}
