from bench.world.user import ScriptedUser


def test_reveals_facts_by_key_words_deterministically():
    user = ScriptedUser({"email": "ada@example.com", "order number": "W1001", "zip code": "10001"})
    assert user.answer("What is your email address?") == "email: ada@example.com"
    assert user.answer("Which ORDER do you mean?") == "order number: W1001"
    assert user.answer("Could you give me your email and your zip?") == "email: ada@example.com; zip code: 10001"
    assert user.answer("what are the order numbers") == "order number: W1001"
    vague = user.answer("How are you?")
    assert vague == user.answer("How are you?") and "email" in vague and "ada@" not in vague


def test_user_without_facts():
    assert "nothing to add" in ScriptedUser({}).answer("email?")
