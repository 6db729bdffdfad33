"""Sibling labels of the viewer's tree: the differing argument values, not a clipped prefix."""

from bench.publish.labels import sibling_labels

A = 'get_reservation_details({"reservation_id":"4NQLHD"})'
B = 'get_reservation_details({"reservation_id":"KHIK97"})'


def test_same_tool_siblings_show_the_value_that_differs():
    assert sibling_labels([A, B], width=60) == ["get_reservation_details(reservation_id=4NQLHD)",
                                                "get_reservation_details(reservation_id=KHIK97)"]
    # at the drawing's width the tool name gives way, the values stay whole
    assert sibling_labels([A, B]) == ["get_reservation_de…(reservation_id=4NQLHD)",
                                      "get_reservation_de…(reservation_id=KHIK97)"]


def test_shared_arguments_are_left_out():
    keys = ['cancel_reservation({"reason":"change of plan","reservation_id":"4NQLHD"})',
            'cancel_reservation({"reason":"change of plan","reservation_id":"KHIK97"})']
    assert sibling_labels(keys) == ["cancel_reservation(reservation_id=4NQLHD)",
                                    "cancel_reservation(reservation_id=KHIK97)"]


def test_an_argument_only_one_sibling_has_is_shown_and_its_absence_named():
    keys = ['update_item({"id":1,"note":"x","qty":2})', 'update_item({"id":1})']
    assert sibling_labels(keys) == ["update_item(note=x, qty=2)", "update_item(no note/qty)"]


def test_a_tool_no_sibling_shares_is_named_alone():
    keys = [A, 'cancel_reservation({"reservation_id":"4NQLHD"})', "list_all({})"]
    assert sibling_labels(keys)[1:] == ["cancel_reservation(…)", "list_all()"]


def test_long_labels_clip_the_tool_name_before_the_values():
    keys = [A.replace("4NQLHD", "X" * 20), B]
    labels = sibling_labels(keys, width=30)
    assert all(len(label) <= 30 for label in labels)
    assert labels[1] == "get_re…(reservation_id=KHIK97)"
    assert labels[0].startswith("…(reservation_id=XXXX")


def test_non_object_arguments_and_non_calls():
    assert sibling_labels(['ask_user("yes")', 'ask_user("no")', "state:abc"]) == \
        ["ask_user(yes)", "ask_user(no)", "state:abc"]
