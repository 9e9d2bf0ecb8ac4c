"""gateway.py's decoding: what is stored and printed is the plugin's own JSON for each message.

    python3 -m unittest test_gateway        (in examples/python-host; run by the e2e tests)
"""

import json
import unittest

import gateway

# Compact, as serde_json writes, with one escape no json.dumps setting reproduces beside raw
# non-ASCII: only text kept from the source comes out byte for byte.
SERDE = ('{"type":"message","accountId":"default","to":"chat_id:7","messageId":"A",'
         '"text":"h\\u00e9 \\"quoted\\" \\\\ ☃ 😀 tab\\tnew\\nline",'
         '"media":[],"replyTo":null,"chatId":7}')
MESSAGE = json.loads(SERDE)


def deliver(params: str, rid: int = 4) -> str:
    return '{"jsonrpc":"2.0","id":%d,"method":"deliver","params":%s}' % (rid, params)


class Decode(unittest.TestCase):
    def test_a_batch_keeps_each_messages_text_byte_for_byte(self):
        other = SERDE.replace('"A"', '"B"')
        text = deliver('{"type":"batch","events":[%s,{"type":"typing"},%s]}' % (SERDE, other))
        message, kept = gateway.decode(text)
        self.assertEqual(message, json.loads(text))
        messages, lines = gateway.routed_lines(kept)
        self.assertEqual([m["messageId"] for m in messages], ["A", "B"])
        self.assertEqual(lines, (SERDE + "\n" + other + "\n").encode("utf-8"))

    def test_a_single_message_is_kept_whole(self):
        message, kept = gateway.decode(deliver(SERDE))
        self.assertEqual(gateway.routed_lines(kept), ([MESSAGE], (SERDE + "\n").encode("utf-8")))
        self.assertEqual(message["params"], MESSAGE)

    def test_whitespace_anywhere_decodes_as_json_loads_does(self):
        text = ' {\n "id" : 1 ,\t"method":"deliver" , "params" : { "type" : "batch" , "events" : '
        text += '[ %s ,\n%s ] } }\n' % (SERDE, SERDE)
        message, kept = gateway.decode(text)
        self.assertEqual(message, json.loads(text))
        self.assertEqual([t for _, t in kept], [SERDE, SERDE])

    def test_other_messages_decode_as_json_loads_does_and_keep_nothing(self):
        for text in ['{"jsonrpc":"2.0","id":1,"result":{}}', '{}', '[1, 2]',
                     '{"method":"log","params":{"level":"warn","events":"not a list"}}',
                     deliver('{"type":"batch","events":[]}'), deliver('[1]')]:
            with self.subTest(text=text):
                message, kept = gateway.decode(text)
                self.assertEqual(message, json.loads(text))
                self.assertEqual(gateway.routed_lines(kept), ([], b""))

    def test_a_batch_inside_a_batch_is_still_stored(self):
        inner = '{"type":"batch","events":[%s]}' % SERDE
        _, kept = gateway.decode(deliver('{"type":"batch","events":[%s]}' % inner))
        messages, lines = gateway.routed_lines(kept)
        self.assertEqual(messages, [MESSAGE])
        self.assertEqual([json.loads(line) for line in lines.splitlines()], [MESSAGE])

    def test_malformed_text_is_a_value_error_naming_where(self):
        cases = {
            '{"id":1': "ends early",
            '{"id" 1}': "expected ':' at character 6",
            '{"id":1}x': "extra data after the message at character 8",
            '{1:2}': "key is not a string",
            deliver('{"type":"batch","events":[%s,]}' % SERDE): "Expecting value",
            deliver('{"type":"batch","events":[%s' % SERDE)[:-1]: "ends early",
        }
        for text, reason in cases.items():
            with self.subTest(text=text):
                with self.assertRaises(ValueError) as caught:
                    gateway.decode(text)
                self.assertIn(reason, str(caught.exception))


if __name__ == "__main__":
    unittest.main()
