"""Every member sees a room's messages in one order; nothing accepted is lost."""

from tests.support.ircclient import IrcTestClient

SENDERS = 3
RECEIVERS = 3
PER_SENDER = 150


def test_all_members_see_one_order_and_every_message(server):
    senders = [IrcTestClient(server.port) for _ in range(SENDERS)]
    receivers = [IrcTestClient(server.port) for _ in range(RECEIVERS)]
    everyone = senders + receivers
    for index, client in enumerate(everyone):
        client.register(f"m{index}")
        client.join("#order")
    # the last joiner's JOIN reached everyone: the room is complete for all
    for client in everyone[:-1]:
        client.expect(lambda m, n=everyone[-1].nick: m.command == "JOIN" and m.prefix.startswith(n + "!"))
    for seq in range(PER_SENDER):
        for index, sender in enumerate(senders):
            sender.send(f"PRIVMSG #order :{index}:{seq}")
    expected_total = SENDERS * PER_SENDER
    orders = []
    for receiver in receivers:
        got = []
        while len(got) < expected_total:
            msg = receiver.expect("PRIVMSG", 10)
            got.append(msg.params[1])
        orders.append(got)
    assert all(order == orders[0] for order in orders)
    for index in range(SENDERS):
        mine = [text for text in orders[0] if text.startswith(f"{index}:")]
        assert mine == [f"{index}:{seq}" for seq in range(PER_SENDER)]
    for client in everyone:
        client.close()
