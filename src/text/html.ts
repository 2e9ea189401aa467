// Text from outside (claims, refs, project paths) made inert in HTML: the five characters that
// can open markup or end an attribute are entities, and control characters are shown as escapes
// (`printable`), so a ref named `<script>` or carrying ESC sequences renders as plain text.
import { printable } from './printable.js';

const ENTITIES: Record<string, string> = {
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  '"': '&quot;',
  "'": '&#39;',
};

/** `text` safe inside an HTML element or a quoted attribute value. */
export function escapeHtml(text: string): string {
  return printable(text).replace(/[&<>"']/g, (c) => ENTITIES[c] as string);
}
