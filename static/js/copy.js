// Copying a command to the clipboard. `navigator.clipboard` exists only in a secure
// context (https, or http on localhost): the page served over plain http on a LAN
// address has none, so a hidden textarea is selected and `execCommand('copy')` copies
// it; when even that is refused, the command's own text is left selected for Ctrl+C.

/** Copies `text`; resolves 'copied', or 'selected' when the user must press Ctrl+C. */
export async function copyText(text, shown) {
  const clip = navigator.clipboard;
  if (clip && typeof clip.writeText === 'function') {
    try {
      await clip.writeText(text);
      return 'copied';
    } catch (_) {
      // Denied (no permission, page not focused): the older way below may still work.
    }
  }
  const area = document.createElement('textarea');
  area.value = text;
  area.setAttribute('readonly', '');
  area.style.position = 'fixed';
  area.style.top = '0';
  area.style.left = '-9999px';
  document.body.append(area);
  area.focus();
  area.select();
  area.setSelectionRange(0, text.length);
  let ok = false;
  try {
    ok = document.execCommand('copy');
  } catch (_) {
    ok = false;
  }
  area.remove();
  if (ok) return 'copied';
  if (shown) {
    const range = document.createRange();
    range.selectNodeContents(shown);
    const sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
  }
  return 'selected';
}
